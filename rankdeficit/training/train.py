"""The training loop: one jitted data-parallel train step, exact evaluation, checkpoints.

`train_and_evaluate(config, workdir)` is the whole job. State lives in one pytree
(`TrainState`), replicated over a `Mesh` with a `data` axis; batches are sharded on that
axis. The step is compiled once (shapes and shardings never change) and donates the old
state's buffers. Metrics stay on device and are fetched only at log steps, so there is no
host sync per step.
"""

import functools
import json
import signal

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rankdeficit import models
from rankdeficit.data import input_pipeline
from rankdeficit.metrics import spectral
from rankdeficit.plan import validation
from rankdeficit.run import checkpointing
from rankdeficit.run import config_diff
from rankdeficit.run import preemption
from rankdeficit.run import run_dir
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock
from rankdeficit.training import losses
from rankdeficit.training import monitor
from rankdeficit.training import monitor_log  # kept apart from the lines above: parallel edits
from rankdeficit.training import optim
from rankdeficit.training import sharding
from rankdeficit.training import steps
from rankdeficit.training import target_norm


def evaluate(
  jitted_eval_step, state: steps.TrainState, config, mesh, temperature: float
) -> dict[str, float]:
  """Scores every example of the test split exactly once (padded batches are masked).

  Also computes the solution rank SR (numerical rank of the pre-softmax logits over the
  whole eval set) and the post-softmax rank at the current temperature.
  """
  totals, all_logits = {}, []
  for batch in input_pipeline.create_eval_iterator(
    config, config.dataset, 'test', batch_size=config.eval_batch_size
  ):
    sums, logits, mask = jitted_eval_step(state, sharding.shard_batch(batch, mesh))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + v
    logits, mask = jax.device_get((logits, mask))
    all_logits.append(np.asarray(logits)[np.asarray(mask, bool)])
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  results = {f'eval/{k}': float(v) / count for k, v in totals.items()}
  logits = np.concatenate(all_logits)
  results['eval/solution_rank'] = int(spectral.numerical_rank(logits))
  results['eval/post_softmax_rank'] = int(spectral.softmax_rank(logits, temperature))
  results['eval/num_examples'] = int(count)
  return results


def _collapse_monitor(config, model, loss_fn, mesh, workdir=None, start_step=0):
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
  batch = next(
    iter(
      input_pipeline.create_eval_iterator(
        config,
        config.dataset,
        'test',
        batch_size=config.metrics_batch_size,
        num_examples=config.metrics_batch_size,
      )
    )
  )
  batch = sharding.shard_batch(batch, mesh)
  key = jax.random.PRNGKey(config.seed + 1)  # fixed: the same feature subset every time
  log = (
    monitor_log.MonitorLog(workdir, start_step) if workdir and jax.process_index() == 0 else None
  )

  def watch(step, state, temperature, writer):
    metrics = metrics_fn(
      steps.model_variables(state), batch['image'], batch['label'], temperature, key
    )
    monitor.write_collapse_metrics(writer, step, metrics)
    if log:
      if not log.has_order():
        log.write_order(monitor.forward_order(model, steps.model_variables(state), batch['image']))
      log.write(step, jax.device_get(metrics), temperature=float(temperature))

  return watch


def _all_finite(tree) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves))


def _summarize(train_metrics, done: int, checkpointer, workdir: str) -> dict[str, float]:
  """Mean train metrics since the last log step; raises on a non-finite loss."""
  summary = {
    f'train/{k}': float(np.mean(v))
    for k, v in jax.tree.map(lambda *x: np.stack(x), *jax.device_get(train_metrics)).items()
  }
  if not np.isfinite(summary['train/loss']):
    raise FloatingPointError(
      f'Non-finite training loss at step {done}; the last good checkpoint '
      f'(step {checkpointer.latest_step}) is kept in {workdir}.'
    )
  return summary


def _steps_averaged(count: int, done: int, start_step: int, log_every: int) -> int:
  """`count`, the steps the train/* means at step `done` cover; logs when a resume at
  `start_step` made them fewer than an uninterrupted run averages there (the running sums
  are not checkpointed: the steps before the resume are in the earlier log lines)."""
  uninterrupted = done - (done - 1) // log_every * log_every
  if count < uninterrupted:
    logging.warning(
      'train/* at step %d average the %d steps since the resume at step %d, '
      'not the %d steps an uninterrupted run averages there.',
      done,
      count,
      start_step,
      uninterrupted,
    )
  return count


def _check_finite(p_all_finite, state, done: int, checkpointer, workdir: str) -> None:
  if not bool(p_all_finite(state.params)):
    raise FloatingPointError(
      f'Non-finite parameters at step {done} (not saved); the last good checkpoint '
      f'(step {checkpointer.latest_step}) is kept in {workdir}.'
    )


def _close_workers(train_iter) -> None:
  """Stops grain's worker processes now rather than at garbage collection (or never)."""
  inner = getattr(train_iter, '_iterator', None)  # grain.DataLoaderIterator's dataset iter
  if hasattr(inner, 'close'):
    inner.close()


def _shut_down(train_iter, checkpointer, writer, *, after_error: bool = False) -> None:
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


def _train_loop(
  config,
  workdir,
  mesh,
  state,
  train_iter,
  checkpointer,
  writer,
  stop,
  fns,
  start_step: int,
  total_steps: int,
  eval_every: int,
) -> dict[str, float]:
  """Steps `start_step` .. `total_steps`: log, save (then evaluate), monitor; stops early
  (after saving the step it reached) on a signal or a multi-host preemption."""
  p_train_step, p_eval_step, p_all_finite, watch, temperature_fn, hooks = fns
  results, train_metrics = {}, []
  for step in range(start_step, total_steps):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      if step == start_step:  # grain starts its worker processes for the first batch
        with stop.starting_workers():
          host_batch = next(train_iter)
      else:
        host_batch = next(train_iter)
      state, metrics = p_train_step(state, sharding.shard_batch(host_batch, mesh))
    train_metrics.append(metrics)
    done = step + 1
    for hook in hooks:
      hook(done)
    if done % config.log_every_steps == 0 or done == total_steps:
      summary = _summarize(train_metrics, done, checkpointer, workdir)
      writer.write_scalars(done, summary)
      results.update(summary)
      results['train/steps_averaged'] = _steps_averaged(
        len(train_metrics), done, start_step, config.log_every_steps
      )
      train_metrics = []
    # Save before evaluating, so an eval failure cannot lose the interval. Every host asks
    # about preemption every step (orbax's sync point), even when stopping anyway.
    preempted = checkpointer.reached_preemption(done)
    stopping = (stop.requested or preempted) and done < total_steps
    saving = stopping or done == total_steps or checkpointer.should_save(done)
    evaluating = done % eval_every == 0 or done == total_steps
    monitoring = watch and (done % config.metrics_every_steps == 0 or done == total_steps)
    if saving or evaluating or monitoring:
      # One check per step that needs finite weights: a diverged run is never saved, and it
      # stops here rather than in the metric writers, even before a log step notices.
      _check_finite(p_all_finite, state, done, checkpointer, workdir)
    if saving:
      checkpointer.save(done, state, train_iter)
    if stopping:
      checkpointer.wait_until_finished()
      logging.warning(
        'Stopped at step %d: saved checkpoint %s; rerun the same command to resume.',
        done,
        run_dir.RunDir(workdir).checkpoint(done),
      )
      raise preemption.Stopped(done, stop.signum or signal.SIGTERM)
    if evaluating:
      eval_results = evaluate(p_eval_step, state, config, mesh, float(temperature_fn(done)))
      writer.write_scalars(done, {k: v for k, v in eval_results.items()})
      logging.info('step %d: %s', done, json.dumps(eval_results))
      results.update(eval_results)
    if monitoring:
      watch(done, state, temperature_fn(done), writer)
  return state, results


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, devices=None
) -> tuple[steps.TrainState, dict[str, float]]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  Args:
    config: a config from `configs/` (see configs/base.py for every field).
    workdir: run directory: config.json, TensorBoard events, checkpoints.
    devices: devices of the data-parallel mesh (default: all).
  Returns:
    The final `TrainState` and the last logged train/eval metrics.
  Raises:
    workdir_lock.LockedError: another live process trains in `workdir`.
    ValueError: `workdir` holds checkpoints of a different config (config_diff.py).
    preemption.Stopped: on SIGTERM/SIGINT (or a multi-host preemption), after saving a
      checkpoint at the step reached; also when the signal arrives during the last step or
      the final evaluation, after the run has completed.
  """
  mesh = sharding.create_mesh(devices)
  info = validation.validate_config(config, workdir, num_devices=mesh.devices.size)
  storage.check_shared_workdir(workdir)
  # One process per workdir; from here on SIGTERM/SIGINT stop the run cleanly.
  with workdir_lock.WorkdirLock(workdir) as lock, preemption.StopRequest() as stop:
    config_diff.restore_config_file(workdir)  # deleted config.json: from the checkpoint
    target_norm.adopt_saved_temperature(config, workdir)  # T chosen at step 0
    config_diff.check_resumable(config, workdir)
    runtime.record_run_info(workdir)
    state, results = _train(config, workdir, mesh, info, stop, lock)
    if stop.requested:
      # The signal came during the last step or the final evaluation: the run is complete
      # and saved, but a driver training run after run in this process (sweeps, the
      # experiment grids) must stop too rather than go on to its next run.
      raise preemption.Stopped(int(state.step), stop.signum)
    return state, results


def _initial_state(config, model, tx, mesh) -> steps.TrainState:
  """The step-0 state, replicated over `mesh`: fresh, or from local pretrained weights."""
  repl = sharding.replicated(mesh)
  image_shape = (config.image_size, config.image_size, 3)
  state = jax.jit(
    functools.partial(steps.create_train_state, model=model, tx=tx, image_shape=image_shape),
    out_shardings=repl,
  )(jax.random.PRNGKey(config.seed))
  if config.model.pretrained_path:
    # Fine-tuning: start from local pretrained weights (a new head if the classes differ).
    params = models.vit.load_pretrained(jax.device_get(state.params), config.model.pretrained_path)
    params = jax.device_put(params, repl)
    state = state.replace(params=params, opt_state=jax.jit(tx.init, out_shardings=repl)(params))
  return state


def _jitted_steps(config, model, tx, loss_fn, temperature_fn, mesh):
  """The train step (state donated) and eval step, batches sharded over the `data` axis."""
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  p_train_step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      loss_fn=loss_fn,
      temperature_fn=temperature_fn,
      preprocess=input_pipeline.device_preprocess(config),
    ),
    in_shardings=(repl, data),
    out_shardings=(repl, repl),
    donate_argnums=0,
  )
  p_eval_step = jax.jit(
    functools.partial(steps.eval_step, model=model, loss_fn=loss_fn, temperature_fn=temperature_fn),
    in_shardings=(repl, data),
    out_shardings=(repl, repl, repl),
  )
  return p_train_step, p_eval_step


def _train(
  config, workdir: str, mesh, info, stop: preemption.StopRequest, lock: workdir_lock.WorkdirLock
):
  """train_and_evaluate after validation: build, restore, train, save, evaluate."""
  num_classes = config.model.num_classes or info.num_classes
  model = models.create_model(config.model, num_classes)
  steps_per_epoch = input_pipeline.steps_per_epoch(config)
  total_steps = (
    config.num_train_steps
    if config.num_train_steps > 0
    else int(config.num_epochs * steps_per_epoch)
  )
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  tx = optim.create_optimizer(config, steps_per_epoch)
  loss_fn = losses.get_loss_fn(config.loss)

  state = _initial_state(config, model, tx, mesh)
  train_iter = input_pipeline.create_train_iterator(config, seed=config.seed)
  checkpointer = checkpointing.Checkpointer(
    workdir, keep=config.keep_checkpoints, every_steps=config.checkpoint_every_steps, config=config
  )  # stored in every checkpoint
  state = checkpointer.restore(state, train_iter)
  start_step = int(jax.device_get(state.step))
  initial_norm = _initial_norm(config, model, state, mesh) if start_step == 0 else None
  temperature_fn = losses.temperature_schedule(
    config.temperature_schedule,
    config.temperature,
    config.final_temperature,
    total_steps,
    [m * steps_per_epoch for m in config.temperature_milestones],
  )
  checkpointing.save_config(config, workdir)

  writer = _metric_writer(config, workdir, start_step)

  p_train_step, p_eval_step = _jitted_steps(config, model, tx, loss_fn, temperature_fn, mesh)
  p_all_finite = jax.jit(_all_finite)
  watch = _collapse_monitor(
    config,
    models.measurement_model(model),
    loss_fn,
    mesh,  # f32
    workdir,
    start_step,
  )

  hooks = _step_hooks(config, workdir, writer, lock, total_steps)
  logging.info(
    'Training %s on %s (T=%g) for %d steps (%d per epoch) on %d devices.',
    config.model.name,
    config.dataset,
    config.temperature,
    total_steps,
    steps_per_epoch,
    mesh.devices.size,
  )

  results = (
    _recorded_scalars(workdir) if start_step > 0 else _record_initial(config, writer, initial_norm)
  )
  if start_step == 0 and watch:
    watch(0, state, temperature_fn(0), writer)
  try:
    state, loop_results = _train_loop(
      config,
      workdir,
      mesh,
      state,
      train_iter,
      checkpointer,
      writer,
      stop,
      (p_train_step, p_eval_step, p_all_finite, watch, temperature_fn, hooks),
      start_step,
      total_steps,
      eval_every,
    )
    results.update(loop_results)
  except BaseException:
    _shut_down(train_iter, checkpointer, writer, after_error=True)
    raise
  _shut_down(train_iter, checkpointer, writer)
  if start_step >= total_steps:
    # Re-running a finished run (or one killed after its last checkpoint): its final metrics.
    results.update(evaluate(p_eval_step, state, config, mesh, float(temperature_fn(total_steps))))
  return state, results


def _metric_writer(config, workdir: str, start_step: int):
  """CLU's writer (TensorBoard on process 0), with the hyperparameters on a fresh run."""
  # CLU's writers import TensorFlow (~6-12 CPU-s); imported here, not at module level, so
  # that a CLI refusing bad input answers before paying for it.
  from clu import metric_writers  # pylint: disable=import-outside-toplevel

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(checkpointing.flat_hparams(config))
  return writer


def _step_hooks(config, workdir: str, writer, lock, total_steps: int) -> list:
  """Called after every step: progress/ETA, the workdir lock's heartbeat, the profiler."""
  from clu import periodic_actions  # pylint: disable=import-outside-toplevel

  hooks = [
    periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer),
    lambda step: lock.refresh(),
  ]
  return hooks + [h for h in [runtime.profile_hook(config, workdir)] if h]


def _initial_norm(config, model, state, mesh) -> float:
  """The initial logits norm, which decides the regime (paper App. E); with
  target_logits_norm it also sets T (config.temperature)."""
  initial_norm = target_norm.mean_logits_norm(model, state, config, mesh)
  if config.target_logits_norm > 0:
    target_norm.choose_temperature(config, initial_norm)
    logging.info(
      'target_logits_norm=%g: initial logits norm %.4g -> T=%.4g.',
      config.target_logits_norm,
      initial_norm,
      config.temperature,
    )
  return initial_norm


def _record_initial(config, writer, initial_norm: float) -> dict[str, float]:
  """Step 0's `init/` results (logits norm and T), written and logged."""
  results = {'init/logits_norm': initial_norm, 'init/temperature': float(config.temperature)}
  writer.write_scalars(0, results)
  logging.info('Initial logits norm (mean per-sample L2): %.4g', initial_norm)
  return results


def _recorded_scalars(workdir: str) -> dict[str, float]:
  """The last `init/` and `train/` scalars that earlier processes of a resumed run logged,
  so that its results hold the initial logits norm and train metrics however it was killed."""
  recorded = {}
  try:
    for prefix in ('init/', 'train/'):
      for tag, (_, values) in monitor_log.read_event_scalars(workdir, prefix).items():
        recorded[tag] = float(values[-1])
  except Exception as e:  # pylint: disable=broad-except
    # Reporting only: an unreadable event file (another filesystem, a torn write) must not
    # stop the resumed training itself.
    logging.warning('Could not read the earlier scalars of %s: %s', workdir, e)
  return recorded
