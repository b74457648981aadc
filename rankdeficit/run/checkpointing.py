"""Orbax checkpoints of the whole training state plus the grain input-iterator state.

A checkpoint is a directory `workdir/checkpoints/<step>/` with three items: `state` (the
`TrainState` pytree: step, params, batch statistics, optimizer state, RNG), `data_iter`
(the grain iterator position, one file per process) and `config` (the resolved config as
JSON: the run's identity, which `config_diff.check_resumable` compares a resumed run with,
whether or not config.json is still there; checkpoints written before it existed have
none). Orbax writes into a temporary directory and renames it when complete, so a run
killed at any moment leaves the previous checkpoints intact; `latest_step` only ever sees finished
ones. Each finished step is then
sealed with the checksums of its files and verified before a restore; a damaged step is
moved to `checkpoints/corrupt/<step>` and the previous one is restored instead
(rankdeficit/run/integrity.py).

A full disk while saving raises `DiskFullError` (the step that failed, the last good one);
the failed step's partial files are removed and the earlier checkpoints stay intact.
"""

import contextlib
import errno
import json
from typing import Any

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from rankdeficit.run import integrity
from rankdeficit.run import run_dir
from rankdeficit.run import storage

CONFIG_ITEM = 'config'
ITEMS = ('state', 'data_iter', CONFIG_ITEM)
_TMP_SUFFIX = '.orbax-checkpoint-tmp'  # orbax writes step N into N.orbax-checkpoint-tmp*


class RestoreError(RuntimeError):
  """An intact checkpoint that cannot be restored into this run's state or iterator."""


class DiskFullError(OSError):
  """No space left on the workdir's device while saving checkpoint `step`.

  The checkpoints saved before are intact; `last_good` is the newest of them (None if
  there is none).
  """

  def __init__(self, step: int, last_good: int | None, device: str, doing: str = 'saving'):
    good = f'step {last_good}' if last_good is not None else 'none (none was saved yet)'
    super().__init__(
      errno.ENOSPC,
      f'no space left on {device} while {doing} step {step}; the last good checkpoint is {good}',
    )
    self.step, self.last_good = step, last_good

  def __str__(self) -> str:
    return self.strerror


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an exception it was raised from, is a full disk (or quota).

  Orbax's array writes (tensorstore) report it as a ValueError naming the OS error.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if 'No space left on device' in str(error) or 'Disk quota exceeded' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def finished_steps(workdir: str) -> list[int]:
  """The steps of `workdir`'s finished checkpoints (orbax renames a step's folder to its
  number once it is complete), in increasing order."""
  directory = run_dir.RunDir(workdir).checkpoints
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def stored_config(workdir: str) -> dict | None:
  """The config stored in the newest checkpoint that holds one (item `config`), or None.

  A step whose config files do not match its checksums is skipped (it is moved aside when
  a restore reaches it); checkpoints written before configs were stored hold none.
  """
  directory = run_dir.RunDir(workdir).checkpoints
  for step in reversed(finished_steps(workdir)):
    step_dir = directory / str(step)
    if not (step_dir / CONFIG_ITEM).exists() or integrity.verify(step_dir, CONFIG_ITEM):
      continue
    try:
      saved = ocp.JsonCheckpointHandler().restore(step_dir / CONFIG_ITEM)
    except Exception as e:  # pylint: disable=broad-except  (unreadable: try an older step)
      logging.warning('Cannot read the config stored in %s: %s', step_dir, _first_line(e))
      continue
    if isinstance(saved, dict):
      return saved
  return None


def _first_line(e: Exception) -> str:
  return (str(e).splitlines() or [''])[0][:300]


class Checkpointer:
  """Saves and restores (`TrainState`, data iterator) pairs, keeping the last `keep`.

  `should_save(step)` (every `every_steps` steps, or at a multi-host preemption sync point)
  is asked once per step; `save` always writes. Finished checkpoints are sealed with
  checksums (rankdeficit/run/integrity.py); `restore` verifies them and falls back past corrupt
  ones, moving each aside to `checkpoints/corrupt/<step>`.
  """

  def __init__(
    self,
    workdir: str,
    keep: int = 3,
    every_steps: int | None = None,
    config: ml_collections.ConfigDict | None = None,
  ):
    """`config` is stored in each checkpoint as its item `config` (`set_config` replaces
    it: a run that chooses its temperature at step 0 does so before its first save)."""
    if keep < 1:
      raise ValueError(
        f'keep={keep}: at least one checkpoint must be kept (config.keep_checkpoints >= 1).'
      )
    policy = None
    if every_steps:
      policy = ocp.checkpoint_managers.AnySavePolicy(
        [
          ocp.checkpoint_managers.FixedIntervalPolicy(every_steps),
          ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
        ]
      )
    self._directory = run_dir.RunDir(workdir).checkpoints
    self._manager = ocp.CheckpointManager(
      self._directory,
      item_names=ITEMS,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, save_decision_policy=policy
      ),
    )
    self.set_config(config)
    self._unsealed: int | None = None
    self._failed = False

  def set_config(self, config: ml_collections.ConfigDict | None) -> None:
    """The config the next saves store (JSON of it now: later changes are not seen)."""
    self._config = None if config is None else json.loads(config.to_json_best_effort())

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Whether `step` is due (interval or preemption); every host must ask every step."""
    return self._manager.should_save(step)

  def reached_preemption(self, step: int) -> bool:
    """True on every host at the step JAX's preemption service agreed on (multi-host)."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: Any, data_iter) -> None:
    """Writes a checkpoint at `step` (asynchronously; the previous one is sealed first).

    Raises DiskFullError when the disk is full (here or, for the previous step, while
    sealing it); nothing is saved after that.
    """
    self._seal()
    args = {'state': ocp.args.StandardSave(state)}
    if data_iter is not None:
      args['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
    if self._config is not None:
      args[CONFIG_ITEM] = ocp.args.JsonSave(self._config)
    with self._disk_full_as(step):
      self._manager.save(step, args=ocp.args.Composite(**args), force=True)
    self._unsealed = step

  def _seal(self) -> None:
    if self._unsealed is None:
      return
    step, self._unsealed = self._unsealed, None
    with self._disk_full_as(step):
      self._manager.wait_until_finished()
    if jax.process_index() == 0 and step in self._manager.all_steps():
      with self._disk_full_as(step, 'sealing'):
        integrity.seal(self._directory / str(step))

  @contextlib.contextmanager
  def _disk_full_as(self, step: int, doing: str = 'saving'):
    """Turns a full disk inside into DiskFullError(step), after removing the step's
    partial files (which would fill the disk for the next attempt too)."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if not is_disk_full(e):
        raise
      self._failed = True
      if jax.process_index() == 0:
        for partial in self._directory.glob(f'{step}{_TMP_SUFFIX}*'):
          partial.rmtree(missing_ok=True)
      self._manager.reload()
      steps = self._manager.all_steps()
      raise DiskFullError(
        step, max(steps) if steps else None, storage.device_of(self._directory), doing
      ) from e

  def restore(self, state: Any, data_iter) -> Any:
    """Restores the newest intact checkpoint into `state`'s structure/sharding and `data_iter`.

    Returns `state` unchanged when there is no (intact) checkpoint.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    for step in sorted(self._manager.all_steps(), reverse=True):
      step_dir = self._directory / str(step)
      problem = integrity.verify(step_dir)
      if problem is None:
        try:
          restored = self._restore_step(step, abstract, data_iter)
          logging.info('Resumed from checkpoint at step %d.', step)
          return restored
        except Exception as e:  # pylint: disable=broad-except
          if integrity.is_sealed(step_dir):
            # Intact bytes that do not fit this run: a code or config change, not damage.
            raise RestoreError(
              f'Checkpoint {step_dir} is intact but does not fit this run '
              f'({type(e).__name__}: {_first_line(e)}); resume with the '
              f'code and config that wrote it, or use a new --workdir.'
            ) from e
          problem = f'{type(e).__name__}: {_first_line(e)}'
      logging.warning(
        'Checkpoint at step %d is corrupt (%s); moving it aside and trying the previous one.',
        step,
        problem,
      )
      self._quarantine(step)
    return state

  def _restore_step(self, step: int, abstract: Any, data_iter) -> Any:
    args = {'state': ocp.args.StandardRestore(abstract)}
    if data_iter is not None:
      args['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._manager.restore(step, args=ocp.args.Composite(**args))['state']

  def _quarantine(self, step: int) -> None:
    if jax.process_index() == 0:
      integrity.quarantine(self._directory, step)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'rankdeficit_quarantine_{step}')
    self._manager.reload()

  def wait_until_finished(self) -> None:
    """Waits for the checkpoint being written, then seals it (DiskFullError if it failed)."""
    if self._unsealed is None:
      self._manager.wait_until_finished()
    self._seal()

  def close(self) -> None:
    """Waits for the last save and seals it; after a DiskFullError, only releases orbax."""
    try:
      if not self._failed:
        self.wait_until_finished()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        if not self._failed:
          raise  # after a full disk the same error comes back here: reported already


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config as JSON (process 0 only)."""
  if jax.process_index() == 0:
    (run_dir.RunDir(workdir).config_file).write_text(
      config.to_json_best_effort(indent=2, sort_keys=True)
    )


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads a run's resolved config back from its config.json alone, locked.

  config.json holds every field of the resolved config, so nothing else is read (in
  particular not the repository's `configs` package, which is not installed and may be
  shadowed by a user's own). Without config.json, the copy stored in the newest checkpoint
  is read. JSON lists become tuples, as the configs write them.
  """
  path = run_dir.RunDir(workdir).config_file
  saved = json.loads(path.read_text()) if path.exists() else stored_config(workdir)
  if saved is None:
    raise FileNotFoundError(
      f'{path} does not exist, and no checkpoint of {workdir} holds its config.'
    )
  config = ml_collections.ConfigDict(_lists_to_tuples(saved))
  config.lock()
  return config


def _lists_to_tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {key: _lists_to_tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_lists_to_tuples(item) for item in value)
  return value


def flat_hparams(config: ml_collections.ConfigDict | dict, prefix: str = '') -> dict:
  """The whole config as TensorBoard hparams: ``{'model.width': 512, ...}``.

  Nested fields get dotted keys; tuples/lists and None become strings (the HParams
  plugin takes only str, bool, int and float), so runs that differ anywhere, e.g. in
  ``model.*``, are told apart.
  """
  items = config.items() if isinstance(config, dict) else config.to_dict().items()
  flat = {}
  for key, value in items:
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flat_hparams(value, f'{prefix}{key}.'))
    elif isinstance(value, (bool, int, float, str)):
      flat[f'{prefix}{key}'] = value
    else:
      flat[f'{prefix}{key}'] = str(value)
  return flat


def _on_local_device(metadata) -> Any:
  """Restore target placing every array on this process's first device.

  The saved shardings name the devices of the training job (e.g. 8 devices over 2 hosts),
  which an analysis on another machine, or another number of processes, does not have.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


def restore_variables(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """The `{'params', 'batch_stats'}` variables of `workdir`'s checkpoint `step` (default:
  the latest) as arrays on this process's first device, and that step."""
  directory = run_dir.RunDir(workdir).checkpoints
  manager = ocp.CheckpointManager(
    directory,
    item_names=('state', 'data_iter'),
    item_handlers={
      'state': ocp.StandardCheckpointHandler(),
      'data_iter': grain.checkpoint.CheckpointHandler(),
    },
  )
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {directory}.')
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_on_local_device(manager.item_metadata(step)['state']))
      ),
    )
  finally:
    manager.close()
  state = restored['state']
  variables = {'params': state['params']}
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  return variables, step
