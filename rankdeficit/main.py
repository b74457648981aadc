"""Command-line entry point.

  python -m rankdeficit.main --config=configs/resnet34_c100.py --config.temperature=100

Any config field can be overridden (`--config.model.width=512`); unknown fields are
rejected. Without `--workdir` the run goes to `runs/<model>_<dataset>_T<T>_seed<seed>`;
running the same command again resumes from its latest checkpoint.

Multi-process: add `--coordinator_address=HOST:PORT --num_processes=P --process_id=i` to
each process's command, or `--config.distributed=True` on a TPU pod or under SLURM (see
rankdeficit/distributed.py). The workdir may be a bucket (gs://...).
"""
import logging as py_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from rankdeficit import distributed, input_pipeline, runtime, storage, train, validation

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory (config, logs, checkpoints). '
                    'Default: runs/<model>_<dataset>_T<temperature>_seed<seed>.')
config_flags.DEFINE_config_file('config', None, 'Path to a config file in configs/.',
                                lock_config=True)
flags.mark_flags_as_required(['config'])
distributed.define_flags()


class _QuietLibraries(py_logging.Filter):
  """Keeps orbax's per-save INFO chatter out of the run log; warnings still pass."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def default_workdir(config) -> str:
  return os.path.join('runs', f'{config.model.name}_{config.dataset}_'
                      f'T{config.temperature:g}_seed{config.seed}')


def _log_file_handler(workdir: str) -> py_logging.Handler:
  """workdir/log<process>.txt; on object stores (gs://) written through epath, and only
  complete once the run closes it (the console log is the live one there)."""
  path = storage.workdir_path(workdir) / f'log{jax.process_index()}.txt'
  if storage.is_uri(workdir):
    return py_logging.StreamHandler(path.open('a' if path.exists() else 'w'))
  return py_logging.FileHandler(os.fspath(path))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  try:
    distributed.initialize_from_flags(auto=config.distributed)
  except ValueError as e:
    sys.exit(f'error: {e}')
  runtime.enable_compilation_cache(config.compilation_cache_dir)
  if config.matmul_precision != 'default':
    jax.config.update('jax_default_matmul_precision', config.matmul_precision)
  workdir = FLAGS.workdir or default_workdir(config)
  try:
    storage.check_writable(workdir)
  except PermissionError as e:
    sys.exit(f'error: {e}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  handler = _log_file_handler(workdir)
  handler.setFormatter(py_logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
  handler.addFilter(_QuietLibraries())
  logging.get_absl_logger().addHandler(handler)
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    validation.validate_config(config, workdir)
    storage.check_shared_workdir(workdir)
  except (ValueError, PermissionError, input_pipeline.DatasetNotFoundError) as e:
    # Config and data errors surface before anything compiles: the message is the point.
    sys.exit(f'error: {e}')
  _, results = train.train_and_evaluate(config, workdir)
  logging.info('Finished: %s', results)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()})


if __name__ == '__main__':
  app.run(main)
