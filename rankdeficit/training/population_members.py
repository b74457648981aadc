"""The members of a population (rankdeficit/training/population.py): each an ordinary run.

A population trains runs that differ only in `VARYING_FIELDS` (seed, temperature and its
schedule, init scheme, learning rate) as one program. Each member keeps everything a single
run keeps: its pre-flighted plan (`run_plan.preflight`), its workdir lock, config.json,
run_info.json, checkpoints (`checkpointing.Checkpointer`, the same `TrainState` pytree a
single run with `input_on_device` saves, so either path resumes the other's), TensorBoard
scalars (`loop_io.metric_writer`), the collapse monitor's history and a log file. What
varies between members reaches the one program as member-axis inputs (`knobs`): a table of
T over the steps (whatever the schedule) and the learning rate, from which each member's
optimizer is rebuilt inside the program (`member_optimizer`); the init scheme and seed only
decide the initial state, built per member exactly as a single run builds its own.

`evaluate` scores every member on each test batch at once (one pass over the test split,
vmapped over the members) and reduces each member as `evaluation.evaluate` reduces a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rankdeficit import models
from rankdeficit.plan import run_plan
from rankdeficit.plan import validation
from rankdeficit.run import checkpointing
from rankdeficit.run import config_diff
from rankdeficit.run import run_dir
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock
from rankdeficit.training import evaluation
from rankdeficit.training import loop_io
from rankdeficit.training import losses
from rankdeficit.training import monitor_hook
from rankdeficit.training import optim
from rankdeficit.training import sharding
from rankdeficit.training import steps
from rankdeficit.training import train as train_lib

# The config fields members may differ in; every other field is the group's.
VARYING_FIELDS = frozenset(
  {
    'seed',
    'temperature',
    'temperature_schedule',
    'final_temperature',
    'temperature_milestones',
    'target_logits_norm',
    'model.init',
    'model.init_sigma',
    'learning_rate',
  }
)


def shared_values(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The flat config fields a population's members must share: all but VARYING_FIELDS and
  `input_on_device` (which a population sets: `on_device`)."""
  values = config_diff.config_values(config)
  return {k: v for k, v in values.items() if k not in VARYING_FIELDS | {'input_on_device'}}


def group_key(config: ml_collections.ConfigDict) -> str:
  """Equal for configs that may train in one population (and only for those)."""
  return repr(sorted(shared_values(config).items()))


# Jitted programs by what they depend on (`program`): populations of one shape in a process
# (a resumed group, the next group of a sweep, the next call of a driver) reuse their
# compilations instead of tracing new closures.
_PROGRAMS: dict[tuple, Any] = {}


def program(key: tuple, build: Callable[[], Any]) -> Any:
  """`build()` (a jitted function), made once per process for `key`: a tuple naming the
  program and everything its closure depends on (e.g. `group_key(config)`)."""
  if key not in _PROGRAMS:
    _PROGRAMS[key] = build()
  return _PROGRAMS[key]


def check_group(configs: Sequence[ml_collections.ConfigDict], names: Sequence[str]) -> None:
  """Raises ValueError (one line, naming the field) unless `configs` may train as one
  population: they differ only in VARYING_FIELDS, on one process, with data the device
  can hold and augment (`validation.validate_fields` with input_on_device=True)."""
  if not configs:
    raise ValueError('A population needs at least one member.')
  first = shared_values(configs[0])
  for config, name in zip(configs[1:], names[1:]):
    values = shared_values(config)
    for key in sorted(set(first) | set(values)):
      if first.get(key) != values.get(key):
        raise ValueError(
          f'population: {name} differs from {names[0]} in {key!r} ({values.get(key)!r} vs '
          f'{first.get(key)!r}); members may differ only in {", ".join(sorted(VARYING_FIELDS))}.'
        )
  if configs[0].distributed:
    raise ValueError('population: config.distributed=True; a population trains in one process.')
  try:
    validation.validate_fields(on_device(configs[0]), 1)
  except ValueError as e:
    raise ValueError(f'population: {e}') from e


def on_device(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with `input_on_device=True`: a population always draws its data on
  the device, and its members' config.json and checkpoints say so (a member is the run
  that `python -m rankdeficit.main` trains with that config)."""
  if isinstance(config, ml_collections.FrozenConfigDict):
    config = config.as_configdict()
  copy = config.copy_and_resolve_references()
  copy.input_on_device = True
  copy.lock()
  return copy


class RunLog:
  """A member's log<process>.txt (the run log of a single run), its lines also in absl's
  log prefixed with the member's name."""

  def __init__(self, workdir: str, name: str):
    self._path = run_dir.RunDir(workdir).log_file(jax.process_index())
    self._name = name
    self._local = not storage.is_uri(workdir) and jax.process_index() == 0

  def __call__(self, level: str, message: str, *args) -> None:
    text = message % args if args else message
    (logging.warning if level == 'WARNING' else logging.info)('[%s] %s', self._name, text)
    if self._local:
      stamp = time.strftime('%Y-%m-%d %H:%M:%S')
      with open(self._path, 'a') as f:
        f.write(f'{stamp} {level} {text}\n')


@dataclasses.dataclass
class Member:
  """One run of a population: its plan, model and I/O, and how it ended (`error`)."""

  plan: run_plan.RunPlan
  name: str
  model: Any
  checkpointer: checkpointing.Checkpointer
  writer: Any
  log: RunLog
  watch: Callable | None
  hooks: list
  start_step: int
  results: dict
  error: FloatingPointError | None = None

  @property
  def config(self) -> ml_collections.FrozenConfigDict:
    return self.plan.config

  @property
  def workdir(self) -> str:
    return self.plan.workdir

  def temperature(self, step: int) -> float:
    """T at `step`, as the single run's loop computes it for evaluation and the monitor."""
    return float(self.plan.temperature.fn()(step))


def open_members(
  plans: Sequence[run_plan.RunPlan], names: Sequence[str], mesh, stack: contextlib.ExitStack
) -> tuple[list[Member], list[steps.TrainState]]:
  """Locks every member's workdir (released by `stack`) and builds each as `train._train`
  builds a run: initial state from its seed and init (`initial_states`), restored from its
  latest checkpoint, T decided at step 0 (target_logits_norm), config saved, writer, step-0
  records."""
  locks, ready = [], []
  for plan in plans:
    locks.append(stack.enter_context(workdir_lock.WorkdirLock(plan.workdir)))
    config_diff.restore_config_file(plan.workdir)
    ready.append(run_plan.recheck(plan))
    runtime.record_run_info(plan.workdir)
  member_models = [models.create_model(p.config.model, p.num_classes) for p in ready]
  states = initial_states(ready, member_models, mesh)
  opened = [
    _open(plan, name, model, state, mesh, lock)
    for plan, name, model, state, lock in zip(ready, names, member_models, states, locks)
  ]
  return [m for m, _ in opened], [s for _, s in opened]


def initial_states(plans, member_models, mesh) -> list[steps.TrainState]:
  """Every member's step-0 state as `train.initial_state` makes it (replicated over `mesh`),
  the members of one init scheme in one program, vmapped over their seeds and learning
  rates: the same numbers, one compilation."""
  states, schemes = [None] * len(plans), {}
  for i, (plan, model) in enumerate(zip(plans, member_models)):
    if plan.config.model.pretrained_path:  # fine-tuning: loaded as a single run loads it
      tx = optim.create_optimizer(plan.config, plan.steps_per_epoch)
      states[i] = train_lib.initial_state(plan, model, tx, mesh)
    else:
      schemes.setdefault((plan.config.model.init, plan.config.model.init_sigma), []).append(i)
  for scheme, indices in schemes.items():
    plan, model = plans[indices[0]], member_models[indices[0]]

    def build(plan=plan, model=model):
      def init(key, learning_rate):
        tx = member_optimizer(plan.config, plan.steps_per_epoch, learning_rate)
        return steps.create_train_state(key, model=model, tx=tx, image_shape=plan.image_shape)

      return jax.jit(jax.vmap(init), out_shardings=sharding.replicated_sharding(mesh))

    key = ('init', group_key(plan.config), scheme, plan.steps_per_epoch, plan.num_classes, mesh)
    keys = jnp.stack([jax.random.PRNGKey(plans[i].config.seed) for i in indices])
    rates = jnp.asarray([plans[i].config.learning_rate for i in indices], jnp.float32)
    stacked = program(key, build)(keys, rates)
    for j, i in enumerate(indices):
      states[i] = unstack(stacked, j)
  return states


def _open(plan, name: str, model, state, mesh, lock) -> tuple[Member, steps.TrainState]:
  """One member from its initial state: restored, T decided, records and I/O opened."""
  config = plan.config
  checkpointer = checkpointing.Checkpointer(
    plan.workdir, keep=config.keep_checkpoints, every_steps=config.checkpoint_every_steps
  )
  state = checkpointer.restore(state, None)
  start = int(jax.device_get(state.step))
  # train.py's private pieces: the same T choice and step-0 records as a single run (see
  # the report of issue 22: they should become public).
  decide = train_lib.decide_temperature
  plan, initial_norm = decide(plan, model, state, mesh, start)
  checkpointer.set_config(plan.config)
  checkpointing.save_config(plan.config, plan.workdir)
  writer = loop_io.metric_writer(plan, start)
  if start > 0:
    results = train_lib.recorded_scalars(plan.workdir)
  else:
    results = train_lib.record_initial(plan, writer, initial_norm)
  loss_fn = losses.get_loss_fn(plan.config.loss)
  measured = models.measurement_model(model)
  watch = monitor_hook.collapse_monitor(plan.config, measured, loss_fn, mesh, plan.workdir, start)
  hooks = loop_io.step_hooks(plan.config, plan.workdir, writer, lock, plan.total_steps)
  log = RunLog(plan.workdir, name)
  member = Member(plan, name, model, checkpointer, writer, log, watch, hooks, start, results)
  if watch and start == 0:
    watch(0, state, member.temperature(0), writer)
  member.log(
    'INFO',
    'Population member %s: %s, T=%g, from step %d of %d.',
    name,
    plan.workdir,
    plan.initial_temperature,
    start,
    plan.total_steps,
  )
  return member, state


def stack(trees: Sequence[Any]) -> Any:
  """The members' pytrees (states, keys) stacked on a new leading member axis."""
  structures = {jax.tree.structure(t) for t in trees}
  if len(structures) > 1:
    raise ValueError(f'population: members have different state structures: {structures}.')
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """Member `index` of a stacked pytree."""
  return jax.tree.map(lambda x: x[index], tree)


def knobs(members: Sequence[Member]) -> dict[str, jax.Array]:
  """The member-axis inputs: 'temperature' f32 [M, total + 1], T at every step under each
  member's schedule (its plan's `temperature.fn()`, as a single run's step computes it), and
  'learning_rate' f32 [M]."""
  total = members[0].plan.total_steps
  all_steps = jnp.arange(total + 1, dtype=jnp.int32)
  tables = [
    jnp.broadcast_to(jnp.asarray(m.plan.temperature.fn()(all_steps), jnp.float32), (total + 1,))
    for m in members
  ]
  rates = [jnp.float32(m.config.learning_rate) for m in members]
  return {'temperature': jnp.stack(tables), 'learning_rate': jnp.stack(rates)}


class _WithLearningRate:
  """`config` read as the optimizer reads it, its learning rate replaced by a traced one."""

  def __init__(self, config, learning_rate):
    self._config, self.learning_rate = config, learning_rate

  def __getattr__(self, name):
    return getattr(self._config, name)


def member_optimizer(config, steps_per_epoch: int, learning_rate: jax.Array):
  """`optim.create_optimizer(config)` at a member's (traced) learning rate: the same schedule
  (milestones, warmup) and the same opt_state structure, so every member's optimizer is
  the one its single run builds."""
  return optim.create_optimizer(_WithLearningRate(config, learning_rate), steps_per_epoch)


def eval_function(plan: run_plan.RunPlan, model) -> Callable:
  """The jitted eval step of a stacked state: `steps.eval_step` vmapped over the members,
  each at its own T, on one shared batch."""
  loss_fn = losses.get_loss_fn(plan.config.loss)

  def member_eval(state, batch, temperature):
    return steps.eval_step(
      state, batch, model=model, loss_fn=loss_fn, temperature_fn=lambda _: temperature
    )

  key = ('eval', group_key(plan.config), plan.num_classes)
  return program(key, lambda: jax.jit(jax.vmap(member_eval, in_axes=(0, None, 0))))


def evaluate(eval_fn, states, members: Sequence[Member], mesh, step: int) -> list[dict]:
  """`evaluation.evaluate` of every member in one pass over the test split: each member's
  eval/* (loss, accuracy, logits norm, solution and post-softmax rank, examples)."""
  temperatures = np.asarray([m.temperature(step) for m in members], np.float32)

  def score_batch(batch):
    sums, logits, mask = eval_fn(states, batch, temperatures)
    return sums, logits, mask[0]  # every member sees the same padded batch

  totals, logits = evaluation.score_test_split(score_batch, members[0].config, mesh)
  return [
    evaluation.eval_results({k: v[i] for k, v in totals.items()}, logits[i], t)
    for i, t in enumerate(temperatures)
  ]
