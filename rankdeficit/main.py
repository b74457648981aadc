"""Command-line entry point.

  python -m rankdeficit.main --config=configs/resnet34_c100.py --config.temperature=100

Any config field can be overridden (`--config.model.width=512`); unknown fields are
rejected. Without `--workdir` the run goes to `runs/<config stem>_T<T>_seed<seed>_<hash>`
(the hash covers every field that changes the weights); running the same command again
resumes from its latest checkpoint. A workdir is used by one process at a time (`lock`),
and is only resumed under the config it was trained with (rankdeficit/run/config_diff.py).
Every check runs once, before anything is written (`run_plan.preflight`); training then
follows the frozen plan it returns (rankdeficit/plan/run_plan.py).
SIGTERM/SIGINT save a checkpoint at the step reached and exit with 128 + the signal.

Multi-process: add `--coordinator_address=HOST:PORT --num_processes=P --process_id=i` to
each process's command, or `--config.distributed=True` on a TPU pod or under SLURM (see
rankdeficit/run/distributed.py). The workdir may be a bucket (gs://...).
"""

import gc
import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rankdeficit.data import input_pipeline
from rankdeficit.plan import run_plan
from rankdeficit.run import checkpointing
from rankdeficit.run import config_diff
from rankdeficit.run import distributed
from rankdeficit.run import preemption
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock
from rankdeficit.training import train

FLAGS = flags.FLAGS
flags.DEFINE_string(
  'workdir',
  None,
  'Run directory (config, logs, checkpoints). '
  'Default: runs/<config stem>_T<temperature>_seed<seed>_<config hash>.',
)
config_flags.DEFINE_config_file(
  'config', None, 'Path to a config file in configs/.', lock_config=True
)
flags.mark_flags_as_required(['config'])
distributed.define_flags()


class _QuietLibraries(py_logging.Filter):
  """Keeps orbax's per-save INFO chatter out of the run log; warnings still pass.

  A full disk is reported once, as main's last line: the tracebacks orbax's threads log
  for it are cut to their message, and asyncio's later 'exception was never retrieved'
  about the same writes is dropped.
  """

  def filter(self, record):
    if record.exc_info and checkpointing.is_disk_full(record.exc_info[1]):
      if record.name == 'asyncio':
        return False
      record.exc_info, record.exc_text = None, None
    return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def _quiet_unraisable(default):
  """sys.unraisablehook without two kinds of noise that follow a failed orbax save: its
  writes completing into an event loop that is already closed, and coroutines of those
  writes collected while the interpreter shuts down."""

  def hook(unraisable):
    text = str(unraisable.exc_value)
    if 'Event loop is closed' in text or 'Python is likely shutting down' in text:
      return
    default(unraisable)

  return hook


def default_workdir(config, config_path: str | None = None) -> str:
  """runs/<config file stem>_T<T>_seed<seed>_<hash of every weight-relevant field>."""
  stem = (
    os.path.splitext(os.path.basename(config_path))[0]
    if config_path
    else (f'{config.model.name}_{config.dataset}')
  )
  return os.path.join('runs', config_diff.run_name(config, stem))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (no traceback) for a bad config file or field."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}')
  except (AttributeError, KeyError) as e:  # ml_collections: an override of no field
    sys.exit(
      f'error: unknown config field {str(e).strip(chr(34))} in the --config.* '
      f'overrides; every field is listed in configs/base.py.'
    )
  except (OSError, ImportError, SyntaxError) as e:  # the --config file itself
    cause = e.__cause__ or e.__context__ or e
    lines = [l.strip() for l in str(cause).splitlines() if l.strip()] or ['']
    sys.exit(f'error: cannot load --config ({lines[-1]}); give a file from configs/.')


class _GiveUpOnError:
  """Logging handler mixin: the first failed write (a full disk) prints one line and turns
  the handler off, instead of a traceback for every record that follows."""

  failed = False

  def emit(self, record):
    if not self.failed:
      super().emit(record)

  def handleError(self, record):  # pylint: disable=invalid-name
    if not self.failed:
      self.failed = True
      error = sys.exc_info()[1]
      sys.stderr.write(
        f'warning: cannot write the log file ({error}); logging to the console only.\n'
      )


class _FileHandler(_GiveUpOnError, py_logging.FileHandler):
  pass


class _StreamHandler(_GiveUpOnError, py_logging.StreamHandler):
  pass


def _log_file_handler(workdir: str) -> py_logging.Handler:
  """workdir/log<process>.txt; on object stores (gs://) written through epath, and only
  complete once the run closes it (the console log is the live one there)."""
  path = storage.workdir_path(workdir) / f'log{jax.process_index()}.txt'
  if storage.is_uri(workdir):
    return _StreamHandler(path.open('a' if path.exists() else 'w'))
  return _FileHandler(os.fspath(path))


def _resolve_workdir(config) -> str:
  """--workdir, or the default run directory; an empty --workdir is refused."""
  if FLAGS.workdir is None:
    return default_workdir(config, config_flags.get_config_filename(FLAGS['config']))
  if not FLAGS.workdir.strip():
    sys.exit(
      f'error: --workdir={FLAGS.workdir!r} is empty; give a directory, or leave '
      f'--workdir out for the default runs/<config>_T<T>_seed<seed>_<hash>.'
    )
  return FLAGS.workdir


def _preflight(config, workdir: str) -> run_plan.RunPlan:
  """The run's plan (`run_plan.preflight`: every check, once); config, data, lock and
  resume errors exit with one line, before anything compiles or is written."""
  try:
    return run_plan.preflight(config, workdir)
  except (ValueError, OSError, workdir_lock.LockedError, input_pipeline.DatasetNotFoundError) as e:
    sys.exit(f'error: {e}')


def _disk_full_message(error: BaseException, workdir: str) -> str:
  """'no space left on <device> while ...; the last good checkpoint is step M'."""
  if isinstance(error, checkpointing.DiskFullError):
    return str(error)
  steps = checkpointing.finished_steps(workdir)
  cause, name = error, None
  while cause is not None and name is None:
    name = getattr(cause, 'filename', None)
    cause = cause.__cause__ or cause.__context__
  return (
    f'no space left on {storage.device_of(workdir)} while writing '
    f'{name or "to the run directory"}; the last good checkpoint is '
    f'{f"step {steps[-1]}" if steps else "none (none was saved yet)"}'
  )


def main(argv):
  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    config = FLAGS.config
    config.get('seed')  # a config file that failed to load raises on first access
  except (OSError, ImportError, SyntaxError, AttributeError) as e:
    path = config_flags.get_config_filename(FLAGS['config'])
    reason = 'no such file' if not os.path.isfile(path) else str(e).splitlines()[0]
    sys.exit(f'error: cannot load --config={path} ({reason}); give a file from configs/.')
  try:
    distributed.initialize_from_flags(auto=config.distributed)
  except ValueError as e:
    sys.exit(f'error: {e}')
  runtime.enable_compilation_cache(config.compilation_cache_dir)
  if config.matmul_precision != 'default':
    jax.config.update('jax_default_matmul_precision', config.matmul_precision)
  workdir = _resolve_workdir(config)
  plan = _preflight(config, workdir)
  sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  handler = _log_file_handler(workdir)
  handler.setFormatter(py_logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
  handler.addFilter(_QuietLibraries())
  logging.get_absl_logger().addHandler(handler)
  logging.info('Run directory: %s', storage.workdir_path(workdir))
  logging.info(
    'JAX process %d/%d, local devices %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  try:
    _, results = train.train_and_evaluate(plan)
  except (workdir_lock.LockedError, checkpointing.RestoreError) as e:
    # Lost a race with a process started meanwhile, or checkpoints too old to hold their
    # config that do not fit this one.
    sys.exit(f'error: {e}')
  except preemption.Stopped as e:
    # 128 + signal: what schedulers see for a job killed by it, so they requeue/retry it.
    logging.warning('%s', e)
    sys.exit(e.exit_code)
  except Exception as e:  # pylint: disable=broad-except
    if not checkpointing.is_disk_full(e):
      raise
    gc.collect()  # orbax's abandoned writes report now, not after the line below
    sys.exit(f'error: {_disk_full_message(e, workdir)}')
  logging.info('Finished: %s', results)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()})


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
