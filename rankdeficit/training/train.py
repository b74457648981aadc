"""The training loop: one jitted data-parallel train step, evaluation, checkpoints.

`train_and_evaluate(plan)` is the whole job: it follows the frozen run plan
(rankdeficit/plan/run_plan.py) that `run_plan.preflight` resolved, or pre-flights
`train_and_evaluate(config, workdir)` itself; the config is never changed (a
target_logits_norm run continues with `plan.with_temperature(T)`). State lives in one pytree
(`TrainState`), replicated over a `Mesh` with a `data` axis; batches are sharded on that
axis. The step is compiled once (shapes and shardings never change) and donates the old
state's buffers. Metrics stay on device and are fetched only at log steps, so there is no
host sync per step. The exact evaluation is rankdeficit/training/evaluation.py, the
collapse-monitor hook rankdeficit/training/monitor_hook.py, and the writer, per-step hooks
and shut-down around the loop rankdeficit/training/loop_io.py. With `config.input_on_device`
the dataset lives on the devices and each call runs a dispatch of several steps
(rankdeficit/training/device_loop.py); the host work (logs, saves, evaluations, the
monitor, stopping) happens at dispatch boundaries, which fall on the same steps.
"""

import dataclasses
import functools
import json
import signal
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rankdeficit import models
from rankdeficit.data import input_pipeline
from rankdeficit.plan import run_plan
from rankdeficit.run import checkpointing
from rankdeficit.run import config_diff
from rankdeficit.run import preemption
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock
from rankdeficit.training import device_loop
from rankdeficit.training import evaluation
from rankdeficit.training import loop_io
from rankdeficit.training import losses
from rankdeficit.training import monitor_hook
from rankdeficit.training import monitor_log  # kept apart from the lines above: parallel edits
from rankdeficit.training import optim
from rankdeficit.training import sharding
from rankdeficit.training import steps
from rankdeficit.training import target_norm


def all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of `tree` is finite (a scalar bool array)."""
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves))


def _summarize(train_metrics, done: int, checkpointer, workdir: str) -> dict[str, float]:
  """Mean train metrics since the last log step (a list of per-step metrics, or of per-
  dispatch metrics stacked over its steps); raises on a non-finite loss."""
  per_step = jax.tree.map(
    lambda *x: np.concatenate([np.reshape(v, -1) for v in x]), *jax.device_get(train_metrics)
  )
  summary = {f'train/{k}': float(np.mean(v)) for k, v in per_step.items()}
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


@dataclasses.dataclass(frozen=True)
class _Loop:
  """What the train loop needs besides the state: the plan, the compiled steps, the I/O."""

  plan: run_plan.RunPlan
  mesh: Any
  train_iter: Any
  checkpointer: checkpointing.Checkpointer
  writer: Any
  stop: preemption.StopRequest
  train_step: Callable
  eval_step: Callable
  all_finite: Callable
  watch: Callable | None
  temperature_fn: Callable
  hooks: list
  start_step: int
  dispatch: Callable | None  # input_on_device: device_loop.dispatcher's; None: grain steps


def _next_batch(loop: _Loop, step: int):
  if step == loop.start_step:  # grain starts its worker processes for the first batch
    with loop.stop.starting_workers():
      return next(loop.train_iter)
  return next(loop.train_iter)


def _log_train(loop: _Loop, train_metrics: list, count: int, done: int) -> dict[str, float]:
  """The train/* means over the `count` steps since the last log step, written and returned."""
  summary = _summarize(train_metrics, done, loop.checkpointer, loop.plan.workdir)
  loop.writer.write_scalars(done, summary)
  averaged = _steps_averaged(count, done, loop.start_step, loop.plan.config.log_every_steps)
  return {**summary, 'train/steps_averaged': averaged}


def _save_or_stop(loop: _Loop, state, done: int, steps_run: int, *, needs_finite: bool) -> None:
  """Saves `done` when due (or stopping); on a signal or a multi-host preemption, stops
  after saving it. Every host asks about preemption for every step (orbax's sync point;
  after a dispatch, for each of its `steps_run` steps in order), even when stopping anyway."""
  total, checkpointer = loop.plan.total_steps, loop.checkpointer
  asked = [checkpointer.reached_preemption(s) for s in range(done - steps_run + 1, done + 1)]
  preempted = any(asked)
  stopping = (loop.stop.requested or preempted) and done < total
  saving = stopping or done == total or checkpointer.should_save(done)
  if saving or needs_finite:
    # One check per step that needs finite weights: a diverged run is never saved, and it
    # stops here rather than in the metric writers, even before a log step notices.
    _check_finite(loop.all_finite, state, done, checkpointer, loop.plan.workdir)
  if saving:
    checkpointer.save(done, state, loop.train_iter)
  if stopping:
    checkpointer.wait_until_finished()
    logging.warning(
      'Stopped at step %d: saved checkpoint %s; rerun the same command to resume.',
      done,
      loop.plan.run_dir.checkpoint(done),
    )
    raise preemption.Stopped(done, loop.stop.signum or signal.SIGTERM)


def _evaluate_at(loop: _Loop, state, step: int) -> dict[str, float]:
  """The evaluation at `step`, written and logged."""
  temperature = float(loop.temperature_fn(step))
  results = evaluation.evaluate(loop.eval_step, state, loop.plan.config, loop.mesh, temperature)
  loop.writer.write_scalars(step, dict(results))
  logging.info('step %d: %s', step, json.dumps(results))
  return results


def _train_loop(loop: _Loop, state) -> tuple[steps.TrainState, dict[str, float]]:
  """Steps `start_step` .. `total_steps`: log, save (then evaluate), monitor; stops early
  (after saving the step it reached) on a signal or a multi-host preemption."""
  config, total = loop.plan.config, loop.plan.total_steps
  results, train_metrics, count, step = {}, [], 0, loop.start_step
  while step < total:
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      if loop.dispatch is None:
        host_batch = _next_batch(loop, step)
        state, metrics = loop.train_step(state, sharding.shard_batch(host_batch, loop.mesh))
        steps_run = 1
      else:  # input on the device: steps up to the next step with host work
        state, metrics, steps_run = loop.dispatch(state, step)
    train_metrics.append(metrics)
    count, done = count + steps_run, step + steps_run
    for hook in loop.hooks:
      hook(done)
    if done % config.log_every_steps == 0 or done == total:
      results.update(_log_train(loop, train_metrics, count, done))
      train_metrics, count = [], 0
    # Save before evaluating, so an eval failure cannot lose the interval.
    evaluating = done % loop.plan.eval_every == 0 or done == total
    monitoring = loop.watch and (done % config.metrics_every_steps == 0 or done == total)
    _save_or_stop(loop, state, done, steps_run, needs_finite=bool(evaluating or monitoring))
    if evaluating:
      results.update(_evaluate_at(loop, state, done))
    if monitoring:
      loop.watch(done, state, loop.temperature_fn(done), loop.writer)
    step = done
  return state, results


def train_and_evaluate(
  config: ml_collections.ConfigDict | run_plan.RunPlan,
  workdir: str | None = None,
  *,
  devices=None,
) -> tuple[steps.TrainState, dict[str, float]]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  Args:
    config: the `run_plan.RunPlan` that `run_plan.preflight` returned (its checks are not
      run again; `workdir` is the plan's), or a config from `configs/` (see
      configs/base.py for every field), which is pre-flighted here. It is never changed.
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
  plan = _plan(config, workdir, mesh)
  # One process per workdir; from here on SIGTERM/SIGINT stop the run cleanly.
  with workdir_lock.WorkdirLock(plan.workdir) as lock, preemption.StopRequest() as stop:
    config_diff.restore_config_file(plan.workdir)  # deleted config.json: from the checkpoint
    plan = run_plan.recheck(plan)  # another process trained there since the pre-flight?
    runtime.record_run_info(plan.workdir)
    state, results = _train(plan, mesh, stop, lock)
    if stop.requested:
      # The signal came during the last step or the final evaluation: the run is complete
      # and saved, but a driver training run after run in this process (sweeps, the
      # experiment grids) must stop too rather than go on to its next run.
      raise preemption.Stopped(int(state.step), stop.signum)
    return state, results


def _plan(config, workdir: str | None, mesh) -> run_plan.RunPlan:
  """`config` when it is a plan (checked against `workdir` and the mesh), else its
  pre-flight for the mesh's devices."""
  if not isinstance(config, run_plan.RunPlan):
    return run_plan.preflight(config, workdir, num_devices=mesh.devices.size)
  if workdir is not None and storage.workdir_path(workdir) != config.run_dir.root:
    raise ValueError(f"workdir={workdir!r} is not the run plan's {config.workdir!r}.")
  config.check_devices(mesh.devices.size)
  return config


def initial_state(plan: run_plan.RunPlan, model, tx, mesh) -> steps.TrainState:
  """The step-0 state, replicated over `mesh`: fresh, or from local pretrained weights."""
  repl = sharding.replicated_sharding(mesh)
  state = jax.jit(
    functools.partial(steps.create_train_state, model=model, tx=tx, image_shape=plan.image_shape),
    out_shardings=repl,
  )(jax.random.PRNGKey(plan.config.seed))
  pretrained = plan.config.model.pretrained_path
  if pretrained:
    # Fine-tuning: start from local pretrained weights (a new head if the classes differ).
    params = models.vit.load_pretrained(jax.device_get(state.params), pretrained)
    params = jax.device_put(params, repl)
    state = state.replace(params=params, opt_state=jax.jit(tx.init, out_shardings=repl)(params))
  return state


def _jitted_steps(config, model, tx, loss_fn, temperature_fn, mesh):
  """The train step (state donated) and eval step, batches sharded over the `data` axis."""
  repl, data = sharding.replicated_sharding(mesh), sharding.data_sharded(mesh)
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


def _train(plan: run_plan.RunPlan, mesh, stop: preemption.StopRequest, lock):
  """train_and_evaluate after the pre-flight: build, restore, train, save, evaluate."""
  config = plan.config
  model = models.create_model(config.model, plan.num_classes)
  tx = optim.create_optimizer(config, plan.steps_per_epoch)
  state = initial_state(plan, model, tx, mesh)
  on_device = config.get('input_on_device', False)  # else grain; no iterator state to save
  train_iter = None if on_device else input_pipeline.create_train_iterator(config, seed=config.seed)
  checkpointer = checkpointing.Checkpointer(
    plan.workdir, keep=config.keep_checkpoints, every_steps=config.checkpoint_every_steps
  )
  state = checkpointer.restore(state, train_iter)
  start_step = int(jax.device_get(state.step))
  plan, initial_norm = decide_temperature(plan, model, state, mesh, start_step)
  config = plan.config  # at the T chosen at step 0, if it was
  checkpointer.set_config(config)  # stored in every checkpoint
  checkpointing.save_config(plan.config, plan.workdir)
  writer = loop_io.metric_writer(plan, start_step)
  loss_fn = losses.get_loss_fn(config.loss)
  temperature_fn = plan.temperature.fn()
  p_train_step, p_eval_step = _jitted_steps(config, model, tx, loss_fn, temperature_fn, mesh)
  measured = models.measurement_model(model)  # f32
  watch = monitor_hook.collapse_monitor(config, measured, loss_fn, mesh, plan.workdir, start_step)
  dispatch = None
  if on_device:
    dispatch = device_loop.dispatcher(
      plan, model, tx, loss_fn, temperature_fn, mesh, monitored=watch is not None
    )
  loop = _Loop(
    plan,
    mesh,
    train_iter,
    checkpointer,
    writer,
    stop,
    p_train_step,
    p_eval_step,
    jax.jit(all_finite),
    watch,
    temperature_fn,
    loop_io.step_hooks(config, plan.workdir, writer, lock, plan.total_steps),
    start_step,
    dispatch,
  )
  _log_start(plan, mesh)
  if start_step > 0:
    results = recorded_scalars(plan.workdir)
  else:
    results = record_initial(plan, writer, initial_norm)
    if watch:
      watch(0, state, temperature_fn(0), writer)
  return _run_loop(loop, state, results)


def _run_loop(loop: _Loop, state, results: dict) -> tuple[steps.TrainState, dict[str, float]]:
  """The train loop, then shutting its workers, checkpointer and writer down (after an
  error too); a finished run re-run reports its final evaluation again."""
  try:
    state, loop_results = _train_loop(loop, state)
    results.update(loop_results)
  except BaseException:
    loop_io.shut_down(loop.train_iter, loop.checkpointer, loop.writer, after_error=True)
    raise
  loop_io.shut_down(loop.train_iter, loop.checkpointer, loop.writer)
  total = loop.plan.total_steps
  if loop.start_step >= total:
    # Re-running a finished run (or one killed after its last checkpoint): its final metrics.
    temperature = float(loop.temperature_fn(total))
    results.update(
      evaluation.evaluate(loop.eval_step, state, loop.plan.config, loop.mesh, temperature)
    )
  return state, results


def _log_start(plan: run_plan.RunPlan, mesh) -> None:
  logging.info(
    'Training %s on %s (T=%g) for %d steps (%d per epoch) on %d devices.',
    plan.config.model.name,
    plan.config.dataset,
    plan.initial_temperature,
    plan.total_steps,
    plan.steps_per_epoch,
    mesh.devices.size,
  )


def decide_temperature(
  plan: run_plan.RunPlan, model, state, mesh, start_step: int
) -> tuple[run_plan.RunPlan, float | None]:
  """(plan at its T, the initial logits norm n0, None on a resume). n0 decides the regime
  (paper App. E); with target_logits_norm it also decides T, at step 0 only: a resumed
  run's plan holds the T its pre-flight adopted from the saved config."""
  if start_step > 0:
    if plan.temperature is None:
      raise checkpointing.RestoreError(
        f'{plan.workdir} resumes a target_logits_norm run at step {start_step}, but no '
        f'saved config holds the T it chose at step 0; use a new --workdir.'
      )
    return plan, None
  initial_norm = target_norm.mean_logits_norm(model, state, plan.config, mesh)
  if plan.config.get('target_logits_norm', 0.0) > 0:
    plan = plan.with_temperature(target_norm.choose_temperature(plan.config, initial_norm))
    logging.info(
      'target_logits_norm=%g: initial logits norm %.4g -> T=%.4g.',
      plan.config.target_logits_norm,
      initial_norm,
      plan.initial_temperature,
    )
  return plan, initial_norm


def record_initial(plan: run_plan.RunPlan, writer, initial_norm: float) -> dict[str, float]:
  """Step 0's `init/` results (logits norm and T), written and logged."""
  results = {'init/logits_norm': initial_norm, 'init/temperature': plan.initial_temperature}
  writer.write_scalars(0, results)
  logging.info('Initial logits norm (mean per-sample L2): %.4g', initial_norm)
  return results


def recorded_scalars(workdir: str) -> dict[str, float]:
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
