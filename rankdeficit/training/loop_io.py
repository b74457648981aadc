"""What the training loop runs beside its steps, and stops at the end: the CLU metric
writer, the per-step hooks (progress/ETA, the workdir lock's heartbeat, the profiler) and
the shut-down of the input workers, the checkpointer and the writer.

Used by rankdeficit/training/train.py; CLU is imported lazily (it pulls in TensorFlow).
"""

from absl import logging
import jax

from rankdeficit.plan import run_plan
from rankdeficit.run import checkpointing
from rankdeficit.run import runtime


def metric_writer(plan: run_plan.RunPlan, start_step: int):
  """CLU's writer (TensorBoard on process 0), with the hyperparameters on a fresh run."""
  # CLU's writers import TensorFlow (~6-12 CPU-s); imported here, not at module level, so
  # that a CLI refusing bad input answers before paying for it.
  from clu import metric_writers  # pylint: disable=import-outside-toplevel

  writer = metric_writers.create_default_writer(plan.workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(checkpointing.flat_hparams(plan.config))
  return writer


def step_hooks(config, workdir: str, writer, lock, total_steps: int) -> list:
  """Called after every step: progress/ETA, the workdir lock's heartbeat, the profiler."""
  from clu import periodic_actions  # pylint: disable=import-outside-toplevel

  hooks = [
    periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer),
    lambda step: lock.refresh(),
  ]
  return hooks + [h for h in [runtime.profile_hook(config, workdir)] if h]


def _close_workers(train_iter) -> None:
  """Stops grain's worker processes now rather than at garbage collection (or never)."""
  inner = getattr(train_iter, '_iterator', None)  # grain.DataLoaderIterator's dataset iter
  if hasattr(inner, 'close'):
    inner.close()


def shut_down(train_iter, checkpointer, writer, *, after_error: bool = False) -> None:
  """Stops the input workers, finishes the last save and flushes the writer. After an
  error (e.g. a full disk) a failure here is logged, so it cannot hide the first one."""
  for close in (lambda: _close_workers(train_iter), checkpointer.close, writer.flush):
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if not after_error:
        raise
      logging.warning(
        'While stopping after an error: %s: %s',
        type(e).__name__,
        (str(e).splitlines() or [''])[0][:200],
      )
