"""The training loop's collapse-monitor hook: the fixed batch, key and program it measures.

`collapse_monitor(...)` builds, once per run, the `watch(step, state, temperature, writer)`
that rankdeficit/training/train.py calls every `metrics_every_steps`: it runs the monitor's
compiled metrics (rankdeficit/training/monitor.py) on the first test batch with a fixed
key, writes them through the CLU writer, and appends them to the run's exact on-disk
history (rankdeficit/training/monitor_log.py).
"""

import jax
import jax.numpy as jnp

from rankdeficit.data import input_pipeline
from rankdeficit.training import monitor
from rankdeficit.training import monitor_log
from rankdeficit.training import monitor_writer
from rankdeficit.training import sharding
from rankdeficit.training import steps


def collapse_monitor(config, model, loss_fn, mesh, workdir=None, start_step=0):
  """Returns `watch(step, state, temperature, writer)` writing the collapse metrics of a
  fixed eval batch (see rankdeficit/training/monitor.py), or None when metrics_every_steps <= 0.

  With `workdir`, every call is also appended to `workdir/monitor/` (exact arrays for the
  paper's figures; see rankdeficit/training/monitor_log.py), dropping what a killed run wrote after
  `start_step`."""
  if config.metrics_every_steps <= 0:
    return None
  metrics_fn = monitor.make_collapse_metrics_fn(
    model,
    lambda logits, labels, t: jnp.mean(loss_fn(logits, labels, t)),
    max_dims=config.max_feature_dims,
    input_ranks=config.metrics_input_ranks,
  )
  batch = input_pipeline.first_test_batch(config, config.metrics_batch_size)
  batch = sharding.shard_batch(batch, mesh)
  key = jax.random.PRNGKey(config.seed + 1)  # fixed: the same feature subset every time
  log = (
    monitor_log.MonitorLog(workdir, start_step) if workdir and jax.process_index() == 0 else None
  )

  def watch(step, state, temperature, writer):
    metrics = metrics_fn(
      steps.model_variables(state), batch['image'], batch['label'], temperature, key
    )
    monitor_writer.write_collapse_metrics(writer, step, metrics)
    if log:
      if not log.has_order():
        log.write_order(monitor.forward_order(model, steps.model_variables(state), batch['image']))
      log.write(step, jax.device_get(metrics), temperature=float(temperature))

  return watch
