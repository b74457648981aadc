"""Dispatches of train steps on a dataset held on the device (`config.input_on_device`).

`dispatcher(...)` loads the train split onto the mesh once (data/device_data.py) and
returns the function the train loop (rankdeficit/training/train.py) calls instead of
feeding one grain batch per step: each call runs up to `config.steps_per_dispatch` steps
in one jitted program (`steps.train_steps`, a `lax.scan` drawing every batch on the
device), donates the state, and returns the per-step metrics stacked.

A dispatch never crosses a step at which the loop works on the host: a log, evaluation,
checkpoint or collapse-monitor step, the profiler's first and last step, or the end. So
those happen at exactly the steps they would with one step per call, and so do the NaN
check, the save-before-evaluate order and SIGTERM (which stops at the next dispatch
boundary, after saving it). `dispatch_size` clips a dispatch to the next such step and
rounds a clipped one down to a power of two: at most 2 + floor(log2(steps_per_dispatch))
distinct sizes are ever compiled (steps_per_dispatch and the powers of two below it), and
only one when steps_per_dispatch divides the log, eval, checkpoint and monitor periods and
the step budget.

The batch of step s is a pure function of (config.seed, s), so a resumed run continues the
same data stream from the step its checkpoint holds; no iterator state is saved.
"""

from __future__ import annotations

import functools
from typing import Callable

from absl import logging
import jax

from rankdeficit.data import device_data
from rankdeficit.plan import run_plan
from rankdeficit.training import sharding
from rankdeficit.training import steps


def host_periods(plan: run_plan.RunPlan, *, monitored: bool) -> tuple[int, ...]:
  """The periods (in steps) of the loop's host work: log, eval, checkpoint, monitor."""
  config = plan.config
  periods = [config.log_every_steps, plan.eval_every, config.checkpoint_every_steps]
  if monitored and config.metrics_every_steps:
    periods.append(config.metrics_every_steps)
  return tuple(int(p) for p in periods)


def host_steps(plan: run_plan.RunPlan) -> tuple[int, ...]:
  """Single steps the loop must stop at: the end, and the profiler's first and last step."""
  config = plan.config
  stops = [plan.total_steps]
  if config.get('profile', False):
    first = int(config.get('profile_first_step', 10))
    stops += [first, first + int(config.get('profile_num_steps', 5))]
  return tuple(stops)


def dispatch_size(
  step: int, *, periods: tuple[int, ...], stops: tuple[int, ...], steps_per_dispatch: int
) -> int:
  """Steps of the dispatch starting after `step` steps: `steps_per_dispatch`, or, when the
  next multiple of a period or the next of `stops` comes sooner, the largest power of two
  that does not pass it."""
  boundary = min([(step // p + 1) * p for p in periods] + [s for s in stops if s > step])
  room = min(boundary - step, steps_per_dispatch)
  if room == steps_per_dispatch:
    return room
  return 1 << (room.bit_length() - 1)


def jitted_train_steps(config, model, tx, loss_fn, temperature_fn, mesh) -> Callable:
  """`run(state, dataset, key, num_steps=K) -> (state, stacked metrics)`: `steps.train_steps`
  jitted for this mesh (state replicated and donated, one compile per K)."""
  repl = sharding.replicated_sharding(mesh)
  return jax.jit(
    functools.partial(
      steps.train_steps,
      batch_size=config.batch_size,
      augment=config.augment,
      model=model,
      tx=tx,
      loss_fn=loss_fn,
      temperature_fn=temperature_fn,
      sharding=sharding.data_sharded(mesh),
    ),
    static_argnames='num_steps',
    out_shardings=(repl, repl),
    donate_argnums=0,
  )


def dispatcher(
  plan: run_plan.RunPlan, model, tx, loss_fn, temperature_fn, mesh, *, monitored: bool
) -> Callable:
  """`dispatch(state, step) -> (state, stacked metrics, number of steps run)`.

  `monitored`: the collapse monitor runs (its period is then a dispatch boundary).
  """
  config = plan.config
  dataset = device_data.load_device_dataset(config, mesh)
  repl = sharding.replicated_sharding(mesh)
  key = jax.device_put(device_data.data_key(config.seed), repl)
  run = jitted_train_steps(config, model, tx, loss_fn, temperature_fn, mesh)
  per_dispatch = int(config.get('steps_per_dispatch', 1))
  size = functools.partial(
    dispatch_size,
    periods=host_periods(plan, monitored=monitored),
    stops=host_steps(plan),
    steps_per_dispatch=per_dispatch,
  )
  logging.info(
    'Input on the device: %d examples (%s, %.0f MB), %d steps per dispatch.',
    dataset.size,
    'replicated' if device_data.is_replicated(dataset) else 'rows sharded over data',
    dataset.images.nbytes / 2**20,
    per_dispatch,
  )

  if per_dispatch > 1 and jax.default_backend() == 'cpu' and config.model.name != 'mlp':
    logging.warning(
      'steps_per_dispatch=%d on the CPU backend: XLA CPU runs the kernel gradients of '
      'convolutions inside a loop ~40x slower than in one step (jaxlib 0.10.2); use '
      'steps_per_dispatch=1 on a CPU (or model.conv_impl=im2col: all dots).',
      per_dispatch,
    )

  def dispatch(state: steps.TrainState, step: int):
    n = size(step)
    state, metrics = run(state, dataset, key, num_steps=n)
    return state, metrics, n

  return dispatch
