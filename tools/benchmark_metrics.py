"""Benchmark of the metrics library and the train-time monitor (not a test).

  python -m tools.benchmark_metrics [--rows 10000 --cols 2048] [--large 10000] [--repeats 3]

1. ``metrics.numerical_rank`` (jitted; float32 SVD of the matrix itself) on a random
   ``rows x cols`` float32 matrix of known rank vs ``torch.linalg.matrix_rank`` on the same
   matrix in the same process (PyTorch is imported here only, and only if installed).
2. Optionally (``--large N``) ``numerical_rank`` of an ``N x N`` float32 matrix.
3. The monitor suite (``monitor.make_collapse_metrics_fn``) on one batch of a small MLP
   vs one jitted SGD train step of the same model and batch: the cost ratio tells how
   often the monitor can run for a < 5% overhead.
4. ``--fraction configs/mlp_c10_cpu.py,configs/resnet20_c10_cpu.py``: for REAL configs, the
   monitor as the train loop builds it (``metrics_batch_size`` examples, ``max_feature_dims``)
   vs the real jitted train step (``steps.train_step``, ``batch_size``), timed interleaved in
   one process (medians), with and without ``input_ranks``, and the cost fraction at the
   config's cadence ``K = metrics_every_steps``:

       fraction = t_monitor / (K * t_step + t_monitor)        (steady state)

   ``--train_steps N`` additionally runs ``train.train_and_evaluate`` for N steps twice
   (``metrics_every_steps=0`` and at the cadence; needs the config's dataset under
   ``--data_dir``) and reports the measured wall-clock fraction (includes compilation
   and the step-0 / final-step calls, so it is pessimistic for short runs).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit import metrics
from rankdeficit.training import monitor


def _time(fn, repeats: int) -> tuple[float, object]:
  out = fn()  # warm-up / compile
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), out


def _test_matrix(rows: int, cols: int, rank: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  left = rng.standard_normal((rows, rank), dtype=np.float32)
  right = rng.standard_normal((rank, cols), dtype=np.float32)
  return left @ right


def bench_rank(rows: int, cols: int, repeats: int) -> dict:
  rank = min(rows, cols) // 2
  x = _test_matrix(rows, cols, rank)
  xj = jnp.asarray(x)
  rank_fn = jax.jit(metrics.numerical_rank)
  t_jax, r_jax = _time(lambda: rank_fn(xj), repeats)
  result = {'shape': (rows, cols), 'true_rank': rank, 'jax_s': t_jax, 'jax_rank': int(r_jax)}
  try:
    import torch  # only here: never in package code or tests
  except ImportError:
    result['torch'] = 'not installed'
    return result
  xt = torch.from_numpy(x)
  torch.linalg.matrix_rank(xt)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    r_torch = int(torch.linalg.matrix_rank(xt))
    times.append(time.perf_counter() - t0)
  result.update(
    torch_s=float(np.median(times)), torch_rank=r_torch, torch_threads=torch.get_num_threads()
  )
  return result


def bench_monitor(batch: int, width: int, depth: int, repeats: int) -> dict:
  import flax.linen as nn
  import optax

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      x = x.reshape(x.shape[0], -1)
      reps = {}
      for i in range(depth):
        x = nn.relu(nn.Dense(width)(x))
        reps[f'layer{i}'] = x
      return nn.Dense(10)(x), reps

  def loss_fn(logits, labels, temperature):
    return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, labels).mean()

  model = MLP()
  images = jax.random.normal(jax.random.PRNGKey(0), (batch, 32, 32, 3))
  labels = jnp.arange(batch) % 10
  variables = model.init(jax.random.PRNGKey(1), images)
  tx = optax.sgd(0.05)
  opt_state = tx.init(variables['params'])

  @jax.jit
  def train_step(params, opt_state, images, labels):

    def loss(p):
      return loss_fn(model.apply({'params': p}, images, train=True)[0], labels, 100.0)

    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  t_step, _ = _time(lambda: train_step(variables['params'], opt_state, images, labels), repeats)
  fn = monitor.make_collapse_metrics_fn(model, loss_fn, max_dims=10_000, top_k=15)
  t0 = time.perf_counter()
  jax.block_until_ready(fn(variables, images, labels, 100.0, jax.random.PRNGKey(3)))
  t_compile = time.perf_counter() - t0
  t_mon, out = _time(lambda: fn(variables, images, labels, 100.0, jax.random.PRNGKey(3)), repeats)
  return {
    'model': f'MLP {depth}x{width}, batch {batch}, 32x32x3 inputs',
    'train_step_s': t_step,
    'monitor_s': t_mon,
    'monitor_first_call_s (compile)': t_compile,
    'monitor / step': t_mon / t_step,
    'min steps between monitor calls for <5% overhead': int(np.ceil(t_mon / (0.05 * t_step))),
    'num_metrics': len(out),
  }


def _load_config(path: str):
  import importlib.util

  spec = importlib.util.spec_from_file_location('bench_config', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _fraction_calls(config) -> dict:
  """{name: call} of the real jitted train step and the monitor (with and without input
  ranks) as the train loop builds them for `config`, on random data."""
  import functools

  from rankdeficit import models
  from rankdeficit.data import input_pipeline
  from rankdeficit.training import losses
  from rankdeficit.training import optim
  from rankdeficit.training import steps

  num_classes = config.model.num_classes or 10  # random data: no dataset is opened
  model = models.create_model(config.model, num_classes)
  loss_fn = losses.get_loss_fn(config.loss)
  tx = optim.create_optimizer(config, 100)
  temperature_fn = lambda step: jnp.asarray(config.temperature, jnp.float32)
  shape = input_pipeline.input_shape(config)
  state = jax.jit(
    functools.partial(steps.create_train_state, model=model, tx=tx, image_shape=shape)
  )(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {
    'image': jnp.asarray(rng.standard_normal((config.batch_size, *shape), dtype=np.float32)),
    'label': jnp.asarray(rng.integers(0, num_classes, config.batch_size, dtype=np.int32)),
  }
  mimages = jnp.asarray(rng.standard_normal((config.metrics_batch_size, *shape), dtype=np.float32))
  mlabels = jnp.asarray(rng.integers(0, num_classes, config.metrics_batch_size, dtype=np.int32))
  train_step = jax.jit(
    functools.partial(
      steps.train_step, model=model, tx=tx, loss_fn=loss_fn, temperature_fn=temperature_fn
    )
  )
  mean_loss = lambda logits, labels, t: jnp.mean(loss_fn(logits, labels, t))
  fns = {
    'monitor': monitor.make_collapse_metrics_fn(model, mean_loss, max_dims=config.max_feature_dims),
    'monitor+input_ranks': monitor.make_collapse_metrics_fn(
      model, mean_loss, max_dims=config.max_feature_dims, input_ranks=True
    ),
  }
  key = jax.random.PRNGKey(1)
  variables = steps.model_variables(state)
  return {
    'train_step': lambda: train_step(state, batch),
    **{
      name: (lambda f=f: f(variables, mimages, mlabels, config.temperature, key))
      for name, f in fns.items()
    },
  }


def _time_interleaved(calls: dict, repeats: int) -> tuple[dict, dict]:
  """({name: first-call seconds}, {name: median seconds per call}); the train step is timed
  over 5 calls per repeat, the others over 1."""
  compile_s = {}
  for name, call in calls.items():
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    compile_s[name] = time.perf_counter() - t0
  times = {name: [] for name in calls}
  for _ in range(repeats):  # interleaved: the load of a shared machine hits all alike
    for name, call in calls.items():
      n = 5 if name == 'train_step' else 1
      t0 = time.perf_counter()
      for _ in range(n):
        out = call()
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / n)
  return compile_s, {name: float(np.median(v)) for name, v in times.items()}


def bench_fraction(config_path: str, repeats: int, cadence: int = 0) -> dict:
  """Monitor call vs real train step for a config (see module docstring, item 4)."""
  config = _load_config(config_path)
  cadence = cadence or config.metrics_every_steps
  compile_s, med = _time_interleaved(_fraction_calls(config), repeats)
  t_step = med['train_step']
  result = {
    'config': config_path,
    'model': config.model.name,
    'batch_size': config.batch_size,
    'metrics_batch_size': config.metrics_batch_size,
    'cadence': cadence,
    'train_step_s': round(t_step, 4),
  }
  for name in ('monitor', 'monitor+input_ranks'):
    t = med[name]
    result[f'{name}_s'] = round(t, 3)
    result[f'{name}_first_call_s'] = round(compile_s[name], 1)
    result[f'{name}/step'] = round(t / t_step, 1)
    result[f'{name}_fraction'] = round(t / (cadence * t_step + t), 4)
    result[f'{name}_min_cadence_5pct'] = int(np.ceil(t / (0.05 / 0.95 * t_step)))
  return result


def bench_train_fraction(
  config_path: str, num_steps: int, data_dir: str | None, cadence: int = 0
) -> dict:
  """Wall-clock of ``train_and_evaluate`` without and with the monitor."""
  import tempfile

  from rankdeficit.training import train

  walls = {}
  for every in (0, cadence or _load_config(config_path).metrics_every_steps):
    config = _load_config(config_path)
    with config.unlocked():
      config.num_train_steps = num_steps
      config.metrics_every_steps = every
      config.eval_every_steps = 10 * num_steps  # evaluation only at the end, in both runs
      config.checkpoint_every_steps = 10 * num_steps
      if data_dir:
        config.data_dir = data_dir
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
      walls[every] = time.perf_counter() - t0
  off, on = walls.values()
  every = list(walls)[1]
  return {
    'config': config_path,
    'steps': num_steps,
    'cadence': every,
    'monitor_calls': len({0, *range(every, num_steps + 1, every), num_steps}) if every else 0,
    'wall_off_s': round(off, 1),
    'wall_on_s': round(on, 1),
    'measured_fraction': round((on - off) / on, 4),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', type=int, default=10_000)
  parser.add_argument('--cols', type=int, default=2048)
  parser.add_argument('--large', type=int, default=0, help='also time an N x N matrix')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--batch', type=int, default=512)
  parser.add_argument('--width', type=int, default=512)
  parser.add_argument('--depth', type=int, default=8)
  parser.add_argument('--skip_monitor', action='store_true')
  parser.add_argument('--fraction', default='', help='comma-separated config files (item 4)')
  parser.add_argument('--cadence', type=int, default=0, help='override metrics_every_steps')
  parser.add_argument(
    '--train_steps', type=int, default=0, help='also time real train_and_evaluate runs'
  )
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args(argv)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}')
  if args.fraction:
    for path in args.fraction.split(','):
      print('fraction:', bench_fraction(path, args.repeats, args.cadence), flush=True)
      if args.train_steps:
        print(
          'train fraction:',
          bench_train_fraction(path, args.train_steps, args.data_dir, args.cadence),
          flush=True,
        )
    return
  print('numerical_rank:', bench_rank(args.rows, args.cols, args.repeats))
  if args.large:
    print('numerical_rank (large):', bench_rank(args.large, args.large, 1))
  if not args.skip_monitor:
    print('monitor:', bench_monitor(args.batch, args.width, args.depth, args.repeats))


if __name__ == '__main__':
  main()
