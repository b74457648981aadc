"""The frozen run plan: everything a run depends on, resolved once before it starts.

`preflight(config, workdir)` runs every check a run needs before anything compiles or is
written, each once (the config and its data, the workdir lock, a resumed target_logits_norm
run's saved temperature, the resumability of the workdir's checkpoints, writability, a
multi-process run's shared workdir), and returns a `RunPlan`: the resolved config, frozen
(nothing downstream changes it), the run directory, the dataset, and what is derived from
them here and nowhere else: `num_classes`, `image_shape`, `steps_per_epoch`, `total_steps`,
`eval_every` and the temperature schedule with its initial and final T.
`rankdeficit.main` and `training.train.train_and_evaluate` train from it; `plan_from_run`
is the plan of a saved run, which `load_run` and the analysis read.

A fresh `target_logits_norm > 0` run knows its T only once it has measured its initial
logits norm at step 0: its plan's `temperature` is None until the training loop calls
`plan.with_temperature(T)`, which returns a new plan. A resumed one adopts the T its saved
config holds (chosen at its own step 0), so the unchanged command resumes it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from rankdeficit import models
from rankdeficit.data import input_pipeline
from rankdeficit.plan import validation
from rankdeficit.run import checkpointing
from rankdeficit.run import config_diff
from rankdeficit.run import run_dir as run_dir_lib
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock
from rankdeficit.training import losses


@dataclasses.dataclass(frozen=True)
class TemperatureSchedule:
  """`config.temperature_schedule` in steps: T(step) from `initial` (config.temperature)
  towards `end` (config.final_temperature) over `total_steps`, moving at `milestone_steps`
  with the 'step' schedule (see `losses.temperature_schedule`)."""

  kind: str
  initial: float
  end: float | None
  total_steps: int
  milestone_steps: tuple[int, ...] = ()

  def fn(self) -> Callable:
    """The jittable `step -> T` of the train and eval steps."""
    return losses.temperature_schedule(
      self.kind, self.initial, self.end, self.total_steps, self.milestone_steps
    )

  @property
  def final(self) -> float:
    """T at the last step, `total_steps`: the final evaluation's and the analysis's T."""
    if self.kind == 'constant' or self.total_steps == 0:
      return float(self.initial)
    if self.kind in ('linear', 'cosine'):
      return float(self.end)
    # 'step': one geometric factor per milestone reached (as the schedule's {step: factor}
    # boundaries: a step >= the milestone, equal milestones once).
    reached = sum(1 for s in set(self.milestone_steps) if s <= self.total_steps)
    if reached == len(self.milestone_steps):
      return float(self.end)
    ratio = (self.end / self.initial) ** (1.0 / len(self.milestone_steps))
    return float(self.initial * ratio**reached)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a run depends on, resolved once (`preflight`, `plan_from_run`); immutable.

  Attributes:
    config: the resolved config, an `ml_collections.FrozenConfigDict` (a copy: the caller's
      config is never changed). A fresh target_logits_norm run's `config.temperature` is
      the command's until `with_temperature`.
    run_dir: the run directory (`run_dir.RunDir`; `workdir` is its path).
    dataset: the training dataset's `DatasetInfo`.
    num_classes: the classifier's outputs: config.model.num_classes, else the dataset's.
    image_shape: (height, width, channels) of one model input.
    steps_per_epoch: training examples (after train_subset) // batch_size.
    total_steps: the step budget: num_train_steps, else num_epochs epochs.
    eval_every: steps between evaluations: eval_every_steps, else once per epoch.
    temperature: the temperature schedule; None while a fresh target_logits_norm run has
      not yet measured its initial logits norm.
    num_devices: the devices the batch sizes were checked for (None: not checked, as in a
      saved run's plan).
    latest_checkpoint: the newest finished checkpoint step when planned (None: none).
  """

  config: ml_collections.FrozenConfigDict
  run_dir: run_dir_lib.RunDir
  dataset: input_pipeline.DatasetInfo
  num_classes: int
  image_shape: tuple[int, int, int]
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  temperature: TemperatureSchedule | None
  num_devices: int | None = None
  latest_checkpoint: int | None = None

  @property
  def workdir(self) -> str:
    """The run directory's path (absolute, or a URI such as gs://...)."""
    return os.fspath(self.run_dir)

  @property
  def initial_temperature(self) -> float | None:
    """T at step 0 (None: not chosen yet)."""
    return None if self.temperature is None else float(self.temperature.initial)

  @property
  def final_temperature(self) -> float | None:
    """T at the last step (None: not chosen yet)."""
    return None if self.temperature is None else self.temperature.final

  def with_temperature(self, temperature: float) -> RunPlan:
    """This plan at T = `temperature` (a target_logits_norm run's choice at step 0)."""
    config = _replaced(self.config, temperature=float(temperature))
    return dataclasses.replace(
      self, config=config, temperature=_schedule(config, self.total_steps, self.steps_per_epoch)
    )

  def check_devices(self, num_devices: int) -> None:
    """Raises ValueError unless the plan's batch sizes were checked for `num_devices`."""
    if self.num_devices is not None and self.num_devices != num_devices:
      raise ValueError(
        f'The run plan of {self.workdir} was checked for {self.num_devices} devices, but '
        f'the mesh has {num_devices}; call preflight with num_devices={num_devices}.'
      )


def preflight(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  num_devices: int | None = None,
  create: bool = True,
) -> RunPlan:
  """Runs every check a run needs before anything compiles or is written, once; its plan.

  In order: the config and its data (`validation.validate_config`; the workdir is only
  checked to be creatable), the workdir lock (`workdir_lock.check_unlocked`), a resumed
  target_logits_norm run's saved T (adopted), the resumability of the workdir's checkpoints
  (`config_diff.check_resumable`), then, with `create`, its writability
  (`storage.check_writable`, which creates the directory) and that every process sees the
  same workdir (`storage.check_shared_workdir`). `config` itself is not changed.

  Args:
    config: a config from configs/ (configs/base.py lists every field).
    workdir: the run directory (local or gs://...).
    num_devices: the devices the batches are split over (default: jax.device_count()).
    create: create the workdir; False leaves the disk untouched (the checks that write
      are skipped).
  Returns:
    The frozen `RunPlan`.
  Raises:
    ValueError, PermissionError, workdir_lock.LockedError, DatasetNotFoundError: one line,
      naming the field or the fix.
  """
  info = validation.validate_config(config, workdir, num_devices, create=False)
  workdir_lock.check_unlocked(workdir)
  frozen, temperature_known = _adopt_saved_temperature(_frozen(config), workdir)
  config_diff.check_resumable(frozen, workdir)
  if create:
    storage.check_writable(workdir)
    storage.check_shared_workdir(workdir)
  return _resolve(
    frozen,
    workdir,
    info,
    num_devices=num_devices or jax.device_count(),
    temperature_known=temperature_known,
  )


def recheck(plan: RunPlan) -> RunPlan:
  """`plan` again, or, when the workdir's checkpoints changed since it was made (another
  process trained there before this one took the lock), a plan from the saved T and
  config_diff's check against those checkpoints (ValueError if they do not fit)."""
  if _latest_checkpoint(plan.workdir) == plan.latest_checkpoint:
    return plan
  config, temperature_known = _adopt_saved_temperature(plan.config, plan.workdir)
  config_diff.check_resumable(config, plan.workdir)
  return _resolve(
    config,
    plan.workdir,
    plan.dataset,
    num_devices=plan.num_devices,
    temperature_known=temperature_known,
  )


def plan_from_run(workdir: str, overrides: Mapping[str, Any] | None = None) -> RunPlan:
  """The plan of the run saved in `workdir` (finished or not), from its stored config
  (config.json, else the copy in its newest checkpoint); nothing is checked or written.

  Its `final_temperature`, `num_classes` and `image_shape` are those the run trained with.
  `overrides` replaces fields that do not change what was trained
  (`config_diff.BOOKKEEPING_FIELDS`, e.g. the analysis machine's `data_dir`); any other
  field is a ValueError.
  """
  fields = dict(overrides or {})
  other = sorted(set(fields) - config_diff.BOOKKEEPING_FIELDS)
  if other:
    raise ValueError(
      f'{", ".join(other)} cannot be overridden in the plan of the saved run {workdir}: '
      f'only {", ".join(sorted(config_diff.BOOKKEEPING_FIELDS))} may differ from it.'
    )
  config = _frozen(checkpointing.load_config(workdir))
  return _resolve(_replaced(config, **fields) if fields else config, workdir)


def load_model(plan: RunPlan, step: int | None = None):
  """The plan's Flax module and the `{'params', 'batch_stats'}` variables of checkpoint
  `step` (default: the latest) as numpy arrays: (model, variables, step)."""
  variables, step = checkpointing.restore_variables(plan.workdir, step)
  return models.create_model(plan.config.model, plan.num_classes), variables, step


def load_run(workdir: str, step: int | None = None):
  """Loads a (finished or in-progress) run for analysis, through its plan.

  Returns:
    (config, model, variables, step): the resolved config (a locked ConfigDict), the Flax
    module, the `{'params', 'batch_stats'}` variables of checkpoint `step` (default:
    latest) as numpy arrays, and that step.
  """
  plan = plan_from_run(workdir)
  model, variables, step = load_model(plan, step)
  config = plan.config.as_configdict()
  config.lock()
  return config, model, variables, step


def _frozen(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  if isinstance(config, ml_collections.FrozenConfigDict):
    return config
  return ml_collections.FrozenConfigDict(config)


def _replaced(config: ml_collections.FrozenConfigDict, **fields) -> ml_collections.FrozenConfigDict:
  """A copy of `config` with top-level `fields` replaced."""
  copy = config.as_configdict()
  for key, value in fields.items():
    copy[key] = value
  return ml_collections.FrozenConfigDict(copy)


def _adopt_saved_temperature(
  config: ml_collections.FrozenConfigDict, workdir: str
) -> tuple[ml_collections.FrozenConfigDict, bool]:
  """(config, whether T is known): a resumed target_logits_norm run takes the T of its
  saved config (chosen at its step 0; the copy stored in the checkpoint, else config.json),
  whatever the command's `temperature`. Without checkpoints of a run with the same target
  T is chosen at step 0; another target is left to config_diff's comparison."""
  target = config.get('target_logits_norm', 0.0)
  if target <= 0:
    return config, True
  if not config_diff.has_checkpoint(workdir):
    return config, False
  saved = config_diff.saved_config(workdir)
  if saved is None or not np.isclose(saved.get('target_logits_norm', 0.0), target):
    return config, False
  return _replaced(config, temperature=float(saved['temperature'])), True


def _latest_checkpoint(workdir: str) -> int | None:
  steps = checkpointing.finished_steps(workdir)
  return steps[-1] if steps else None


def _schedule(config, total_steps: int, steps_per_epoch: int) -> TemperatureSchedule:
  final = config.get('final_temperature')
  return TemperatureSchedule(
    kind=config.get('temperature_schedule', 'constant'),
    initial=float(config.temperature),
    end=None if final is None else float(final),
    total_steps=total_steps,
    milestone_steps=tuple(
      int(m * steps_per_epoch) for m in config.get('temperature_milestones', ())
    ),
  )


def _resolve(
  config: ml_collections.FrozenConfigDict,
  workdir: str,
  info: input_pipeline.DatasetInfo | None = None,
  *,
  num_devices: int | None = None,
  temperature_known: bool = True,
) -> RunPlan:
  """The plan of `config` in `workdir`: the one place where its derived values are decided."""
  if info is None:
    info = input_pipeline.dataset_info(config.dataset, config.data_dir)
  steps_per_epoch = input_pipeline.steps_per_epoch(config, info)
  total_steps = (
    config.num_train_steps
    if config.num_train_steps > 0
    else int(config.num_epochs * steps_per_epoch)
  )
  eval_every = config.get('eval_every_steps', -1)
  return RunPlan(
    config=config,
    run_dir=run_dir_lib.RunDir(workdir),
    dataset=info,
    num_classes=int(config.model.num_classes or info.num_classes),
    image_shape=tuple(input_pipeline.input_shape(config)),
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
    eval_every=eval_every if eval_every > 0 else steps_per_epoch,
    temperature=_schedule(config, total_steps, steps_per_epoch) if temperature_known else None,
    num_devices=num_devices,
    latest_checkpoint=_latest_checkpoint(workdir),
  )
