"""A population: runs that differ only in seed, temperature (schedule), init or learning rate,
trained as ONE jitted program with a leading member axis.

`train_population(configs, workdirs)` is `train.train_and_evaluate` for a group of runs (the
group rule and the members' I/O are rankdeficit/training/population_members.py):

* Every member is pre-flighted (`run_plan.preflight`), locked and built as a single run builds
  itself (its own seed and init scheme), restored from its own latest checkpoint, then the
  members' `TrainState`s are stacked (`jax.tree.map(jnp.stack)`) and `steps.train_steps`
  (the dataset on the device, `data/device_data.py`) is vmapped over (state, the member's
  data key `device_data.data_key(seed)`, its knobs: T at every step and its learning rate).
  The dataset is shared; each member draws its own data order and augmentation.
* One dispatch runs up to `config.steps_per_dispatch` steps and ends at every step where a
  single run logs, evaluates, checkpoints or monitors (and at the end). At those boundaries
  every member gets what a single run gets at that step: train/* means written to its
  TensorBoard, a checkpoint (`Checkpointer.should_save`, and the last step) of its own
  (unstacked) state, the evaluation (all members in one pass over the test split), the
  collapse monitor. SIGTERM/SIGINT (`preemption.StopRequest`) are honoured at dispatch
  boundaries: every member saves the step reached, then `preemption.Stopped` is raised.
* A member whose loss or parameters stop being finite ends with a FloatingPointError (no
  more checkpoints or records; its last good checkpoint is kept); the others go on.
* Resume: every member restarts from its own latest checkpoint. Members at different steps
  (a group killed while saving, or members added later) are realigned: the members
  furthest behind train alone until they reach the next member's step, which then joins,
  and so on; the log of each member names the step it resumed from.

A member equals the same point trained alone with `input_on_device=True` up to float
summation order (tests/training/test_population.py): the same initial state (vmapped over the
seeds of one init scheme: the same numbers), data stream, optimizer and T at every step.
Its config.json and checkpoints say `input_on_device=True` (a population always draws its
data on the device), so `python -m rankdeficit.main` with that config resumes a member.
The compiled programs are kept per process by what they depend on
(`population_members.program`): a resumed group, or the next group of a sweep of the same
shape, compiles nothing again. Only one device is used (members are not split over devices).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rankdeficit.data import device_data
from rankdeficit.plan import run_plan
from rankdeficit.run import preemption
from rankdeficit.training import device_loop
from rankdeficit.training import loop_io
from rankdeficit.training import losses
from rankdeficit.training import population_members as pm
from rankdeficit.training import sharding
from rankdeficit.training import steps
from rankdeficit.training import train as train_lib

# Per member: whether every leaf of a stacked pytree is finite (train.py's check, vmapped).
_ALL_FINITE = jax.jit(jax.vmap(train_lib.all_finite))


@dataclasses.dataclass
class PopulationResult:
  """How a population ended: per member its last train/eval metrics (as
  `train_and_evaluate` returns them) or its FloatingPointError, and the group's timing."""

  outcomes: list[dict[str, float] | FloatingPointError]
  train_seconds: float  # the whole call: set-up, compiles, dispatches, evaluations, saves
  dispatch_seconds: float  # the dispatches of `steps_timed` steps (no compilation in them)
  steps_timed: int  # population steps in those dispatches (the first of each size aside)
  steps_trained: int  # population steps dispatched by this call
  flops_per_step: float | None  # XLA's count for one step of all members (None: unknown)


@dataclasses.dataclass
class _Group:
  """What the loop needs besides the members' states: the compiled program and its inputs."""

  plan: run_plan.RunPlan  # the first member's: every member shares its shape and budget
  mesh: Any
  dataset: device_data.DeviceDataset
  stop: preemption.StopRequest
  eval_fn: Any
  all_finite: Any
  dispatch: Any  # jitted (states, keys, knobs, dataset, *, num_steps) -> (states, metrics)
  monitored: bool  # the collapse monitor runs (its period is a dispatch boundary)
  shapes: set = dataclasses.field(default_factory=set)  # (steps, members) dispatched so far
  dispatch_seconds: float = 0.0  # the timed dispatches (all but the first of each shape)
  steps_timed: int = 0
  steps_trained: int = 0


def _dispatch_function(plan: run_plan.RunPlan, model) -> Any:
  """The population program: `steps.train_steps` vmapped over (state, key, knobs)."""
  config = plan.config
  loss_fn = losses.get_loss_fn(config.loss)
  total = plan.total_steps

  def member(state, key, knobs, dataset, num_steps):
    tx = pm.member_optimizer(config, plan.steps_per_epoch, knobs['learning_rate'])
    table = knobs['temperature']
    return steps.train_steps(
      state,
      dataset,
      key,
      num_steps=num_steps,
      batch_size=config.batch_size,
      augment=config.augment,
      model=model,
      tx=tx,
      loss_fn=loss_fn,
      temperature_fn=lambda step: table[jnp.minimum(step, total)],
    )

  def run(states, keys, knobs, dataset, *, num_steps):
    fn = functools.partial(member, num_steps=num_steps)
    return jax.vmap(fn, in_axes=(0, 0, 0, None))(states, keys, knobs, dataset)

  key = ('dispatch', pm.group_key(config), total, plan.steps_per_epoch, plan.num_classes)
  return pm.program(key, lambda: jax.jit(run, static_argnames='num_steps', donate_argnums=0))


def _run(group: _Group, states, keys, knobs, num_steps: int):
  """One dispatch of `num_steps` steps; timed unless it is the first of its shape (which
  compiles, or finds the program compiled by an earlier population)."""
  shape = (num_steps, len(keys))  # a phase of fewer members is another program
  start = time.perf_counter()
  states, metrics = group.dispatch(states, keys, knobs, group.dataset, num_steps=num_steps)
  jax.block_until_ready(states)
  if shape in group.shapes:
    group.dispatch_seconds += time.perf_counter() - start
    group.steps_timed += num_steps
  group.shapes.add(shape)
  group.steps_trained += num_steps
  return states, metrics


def flops_per_step(group: _Group, states, keys, knobs) -> float | None:
  """XLA's FLOPs of one population step (all members), from the 1-step program's HLO."""
  try:
    cost = group.dispatch.lower(states, keys, knobs, group.dataset, num_steps=1).cost_analysis()
  except Exception:  # pylint: disable=broad-except  (a backend without a cost model)
    return None
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and cost.get('flops') else None


def _dispatch_size(group: _Group, step: int, end: int) -> int:
  """Steps of the dispatch after `step`: as a single run's (`device_loop.dispatch_size`:
  never past a step with host work, few distinct sizes), and never past `end`."""
  plan = group.plan
  return device_loop.dispatch_size(
    step,
    periods=device_loop.host_periods(plan, monitored=group.monitored),
    stops=device_loop.host_steps(plan) + (end,),
    steps_per_dispatch=int(plan.config.get('steps_per_dispatch', 1)),
  )


def _fail(member: pm.Member, message: str) -> None:
  """Ends `member` with a FloatingPointError (logged); the population goes on without it."""
  latest = member.checkpointer.latest_step
  member.error = FloatingPointError(
    f'{message}; the last good checkpoint (step {latest}) is kept in {member.workdir}.'
  )
  member.log('WARNING', '%s', member.error)


def _log_train(group: _Group, members, pending: list, done: int) -> None:
  """The train/* means since the last log step of every live member (a non-finite loss
  ends that member)."""
  metrics = jax.device_get(pending)
  for i, member in enumerate(members):
    if member.error:
      continue
    summary = {
      f'train/{k}': float(np.mean(np.concatenate([m[k][i] for m in metrics]))) for k in metrics[0]
    }
    if not np.isfinite(summary['train/loss']):
      _fail(member, f'Non-finite training loss at step {done}')
      continue
    member.writer.write_scalars(done, summary)
    count = sum(len(m['loss'][i]) for m in metrics)
    member.results.update(summary, **{'train/steps_averaged': count})


def _check_finite(group: _Group, members, states, done: int) -> None:
  """Ends every live member whose parameters are not all finite (never saved)."""
  finite = np.asarray(jax.device_get(group.all_finite(states.params)))
  for member, ok in zip(members, finite):
    if not member.error and not ok:
      _fail(member, f'Non-finite parameters at step {done} (not saved)')


def _save(group: _Group, members, states, done: int, *, stopping: bool) -> None:
  """Each live member's checkpoint at `done`: when due, at the end, or when stopping."""
  total = group.plan.total_steps
  for i, member in enumerate(members):
    due = member.checkpointer.should_save(done)  # asked every boundary, as orbax wants
    if not member.error and (stopping or done == total or due):
      member.checkpointer.save(done, pm.unstack(states, i), None)
  if stopping:
    for member in members:
      member.checkpointer.wait_until_finished()
      checkpoint = member.plan.run_dir.checkpoint(done)
      member.log(
        'WARNING', 'Stopped at step %d: saved checkpoint %s; rerun to resume.', done, checkpoint
      )
    raise preemption.Stopped(done, group.stop.signum or signal.SIGTERM)


def _evaluate(group: _Group, members, states, done: int) -> None:
  for member, results in zip(
    members, pm.evaluate(group.eval_fn, states, members, group.mesh, done)
  ):
    if not member.error:
      member.writer.write_scalars(done, dict(results))
      member.results.update(results)
      member.log('INFO', 'step %d: %s', done, results)


def _monitor(members, states, done: int) -> None:
  for i, member in enumerate(members):
    if member.watch and not member.error:
      member.watch(done, pm.unstack(states, i), member.temperature(done), member.writer)


def _after_dispatch(group: _Group, members, states, pending: list, done: int) -> list:
  """Everything a single run does at step `done`; returns the metrics still to log."""
  config, total = group.plan.config, group.plan.total_steps
  for member in members:
    if not member.error:
      for hook in member.hooks:
        hook(done)
  if done % config.log_every_steps == 0 or done == total:
    _log_train(group, members, pending, done)
    pending = []
  evaluating = done % group.plan.eval_every == 0 or done == total
  every = config.metrics_every_steps
  monitoring = every > 0 and (done % every == 0 or done == total)
  stopping = group.stop.requested and done < total
  _check_finite(group, members, states, done)
  _save(group, members, states, done, stopping=stopping)
  if evaluating:
    _evaluate(group, members, states, done)
  if monitoring:
    _monitor(members, states, done)
  return pending


def _train_span(group: _Group, members, states, start: int, end: int):
  """Trains the stacked `states` of `members` from step `start` to `end`."""
  keys = pm.stack([device_data.data_key(m.config.seed) for m in members])
  knobs = pm.knobs(members)
  step, pending = start, []
  while step < end and not all(m.error for m in members):
    nxt = step + _dispatch_size(group, step, end)
    states, metrics = _run(group, states, keys, knobs, nxt - step)
    pending.append(metrics)
    step = nxt
    pending = _after_dispatch(group, members, states, pending, step)
  return states


def _train_phases(group: _Group, members, states: list) -> list:
  """Trains every member to the end; members behind the others catch up first (see the
  module docstring). Returns the members' final states."""
  total = group.plan.total_steps
  starts = sorted({m.start_step for m in members if m.start_step < total})
  for i, start in enumerate(starts):
    end = starts[i + 1] if i + 1 < len(starts) else total
    active = [k for k, m in enumerate(members) if m.start_step <= start and not m.error]
    if not active:
      continue
    if len(starts) > 1:
      at = ', '.join(f'{members[k].name}@{members[k].start_step}' for k in active)
      members[active[0]].log('INFO', 'Realigning the population: %s train to step %d.', at, end)
    stacked = pm.stack([states[k] for k in active])
    stacked = _train_span(group, [members[k] for k in active], stacked, start, end)
    for j, k in enumerate(active):
      states[k] = pm.unstack(stacked, j)
  return states


def _final_evaluation(group: _Group, members, states: list) -> None:
  """A member that resumed at the last step (killed after its final checkpoint) reports its
  final evaluation again, as a single run re-run does."""
  total = group.plan.total_steps
  again = [k for k, m in enumerate(members) if m.start_step >= total and not m.error]
  if again:
    _evaluate(group, [members[k] for k in again], pm.stack([states[k] for k in again]), total)


def _group(plans: Sequence[run_plan.RunPlan], members, mesh, stop) -> _Group:
  plan = plans[0]
  model = members[0].model  # apply is the same for every init scheme
  return _Group(
    plan=members[0].plan,
    mesh=mesh,
    dataset=device_data.load_device_dataset(plan.config, mesh),
    stop=stop,
    eval_fn=pm.eval_function(plan, model),
    all_finite=_ALL_FINITE,
    dispatch=_dispatch_function(members[0].plan, model),
    monitored=members[0].watch is not None,
  )


def preflight(configs, workdirs, names, mesh) -> list[run_plan.RunPlan]:
  """Every member's plan (`run_plan.preflight` of its config with input_on_device=True),
  after the group rule (`check_group`); ValueError (one line) naming the member and field."""
  pm.check_group(configs, names)
  return [
    run_plan.preflight(pm.on_device(c), w, num_devices=mesh.devices.size)
    for c, w in zip(configs, workdirs)
  ]


def train_population(
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  names: Sequence[str] | None = None,
  *,
  device=None,
) -> PopulationResult:
  """Trains the runs `configs` (in `workdirs`) as one population; resumes each member.

  Args:
    configs: the members' configs: they may differ only in `population_members.VARYING_FIELDS`.
    workdirs: one run directory per member (an ordinary run directory each).
    names: the members' names in logs and errors (default: the workdirs).
    device: the device the population trains on (default: the first local device).
  Returns:
    The `PopulationResult`: each member's final train/eval metrics or FloatingPointError.
  Raises:
    ValueError: members that may not train together (one line, naming the field), or any
      pre-flight error of a member.
    preemption.Stopped: on SIGTERM/SIGINT, after every member saved the step reached.
  """
  started = time.perf_counter()
  names = list(names or workdirs)
  mesh = sharding.create_mesh([device or jax.local_devices()[0]])
  plans = preflight(configs, workdirs, names, mesh)
  with contextlib.ExitStack() as stack, preemption.StopRequest() as stop:
    members, states = pm.open_members(plans, names, mesh, stack)
    group = _group(plans, members, mesh, stop)
    flops = flops_per_step(group, _stacked_shapes(states), *_inputs(members))
    try:
      states = _train_phases(group, members, states)
      _final_evaluation(group, members, states)
    except BaseException:
      for m in members:
        loop_io.shut_down(None, m.checkpointer, m.writer, after_error=True)
      raise
    for m in members:
      loop_io.shut_down(None, m.checkpointer, m.writer)
    if stop.requested:  # during the last dispatch or the final evaluation: complete, stop
      raise preemption.Stopped(group.plan.total_steps, stop.signum)
  outcomes = [m.error or m.results for m in members]
  seconds = time.perf_counter() - started
  return PopulationResult(
    outcomes, seconds, group.dispatch_seconds, group.steps_timed, group.steps_trained, flops
  )


def _stacked_shapes(states: list) -> Any:
  """The stacked states' shapes, for lowering without stacking them."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((len(states), *x.shape), x.dtype), states[0])


def _inputs(members) -> tuple:
  return pm.stack([device_data.data_key(m.config.seed) for m in members]), pm.knobs(members)
