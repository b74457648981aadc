"""The run an analysis reads: checks on its directory, its checkpoint, and what the metrics
need of it (the final temperature, the number of classes, the input shape, the head), which
come from the run's frozen plan (rankdeficit/plan/run_plan.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from absl import logging
import numpy as np

from rankdeficit import models
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import run_dir
from rankdeficit.run import storage


def check_analyzable(workdir: str) -> None:
  """Raises ValueError (one line naming the file, field and fix) unless `workdir` holds a
  readable config (config.json, else the copy stored in its checkpoints) with a valid
  temperature and at least one checkpoint. Reads only."""
  from rankdeficit.run import config_diff  # pylint: disable=import-outside-toplevel

  path = run_dir.RunDir(workdir)
  saved = _saved_config(path)
  for field in ('temperature', 'final_temperature'):
    value = saved.get(field) if isinstance(saved, dict) else None
    if field == 'temperature' or value is not None:
      if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(
          f'{path.config_file}: {field}={value!r} is invalid (a finite number > 0 '
          f'is needed to compute the post-softmax layer); fix config.json.'
        )
  if not config_diff.has_checkpoint(path.root):
    raise ValueError(
      f'No checkpoint in {path.checkpoints}: train the run first '
      f'(python -m rankdeficit.main ... --workdir={workdir}).'
    )


def _saved_config(path: run_dir.RunDir) -> Any:
  """The run's config as saved: config.json, else the copy sealed in its checkpoints."""
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel

  config_path = path.config_file
  stored = None if config_path.exists() else checkpointing.stored_config(path.root)
  if not config_path.exists() and stored is None:
    raise ValueError(
      f'{config_path} does not exist: --workdir must be a run directory '
      f'written by python -m rankdeficit.main.'
    )
  try:
    return storage.read_json(config_path) if stored is None else stored
  except ValueError as e:
    raise ValueError(
      f'{config_path} is not valid JSON ({str(e).splitlines()[0]}); restore '
      f'it from the run that wrote the checkpoints.'
    ) from e


def warn_if_training(workdir: str) -> str | None:
  """Logs and returns a warning when a live process holds `workdir`'s lock (see
  rankdeficit/run/workdir_lock.py): the run is still training, so its latest checkpoint, not
  its final weights, is what gets analysed. None otherwise."""
  from rankdeficit.run import workdir_lock  # pylint: disable=import-outside-toplevel

  holder = workdir_lock.live_holder(storage.workdir_path(workdir))
  if holder is None:
    return None
  message = (
    f'{workdir} is still training (locked by {workdir_lock.describe(holder)}): '
    f'this analyses its latest checkpoint, not its final weights; analyse it '
    f'again when the run has finished.'
  )
  logging.warning('%s', message)
  return message


def classifier_head(variables) -> tuple[np.ndarray, np.ndarray] | None:
  """The final Dense layer's (kernel, bias) as float32 (bias 0 without one); None if absent."""
  head = variables.get('params', {}).get('head')
  if head is None:
    return None
  return np.asarray(head['kernel'], np.float32), np.asarray(head.get('bias', 0.0), np.float32)


class LoadedRun(NamedTuple):
  """A run as the analysis reads it (`load_for_analysis`)."""

  config: Any  # the plan's frozen config, with the analysis's data_dir / ood_dataset
  model: Any  # the float32 measurement model
  variables: Any
  step: int
  num_classes: int
  ood_classes: int | None
  temperature: float  # the final one
  image_shape: tuple[int, int, int]
  head: tuple[np.ndarray, np.ndarray] | None


def load_for_analysis(workdir: str, analysis: AnalysisConfig, timer) -> LoadedRun:
  """The checkpoint at `analysis.step` (default: latest) and what the metrics need of it,
  all read from the run's plan (`plan.run_plan.plan_from_run`): the final temperature of its
  schedule, its number of classes and its input shape are decided there and only there."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.plan import run_plan  # pylint: disable=import-outside-toplevel

  overrides = {
    field: value
    for field, value in (('data_dir', analysis.data_dir), ('ood_dataset', analysis.ood_dataset))
    if value is not None
  }
  with timer('load_run'):
    plan = run_plan.plan_from_run(workdir, overrides)
    model, variables, step = run_plan.load_model(plan, analysis.step)
  config = plan.config
  ood = config.ood_dataset
  return LoadedRun(
    config,
    models.measurement_model(model),  # float32 features even from a bf16-trained run
    variables,
    step,
    num_classes=plan.num_classes,
    ood_classes=input_pipeline.dataset_info(ood, config.data_dir).num_classes if ood else None,
    temperature=float(plan.final_temperature),
    image_shape=tuple(plan.image_shape),
    head=classifier_head(variables),
  )
