"""Training images/s of the MLP 8x512 on CIFAR-10: input on the device vs grain in memory.

  python -m tools.bench_input_on_device [--data_dir=data/tfds] [--steps=0] [--repeats=3]
      [--augment=none,cifar] [--steps_per_dispatch=39] [--width=512] [--train_subset=0]

Trains configs/mlp_c10_cpu.py's MLP (7 hidden ReLU layers of `--width` + the classifier,
SGD lr 0.05, batch 128) on all 50,000 cifar10_jpeg train images (import them once:
`python -m tools.import_data cifar10_jpeg --data_dir=data/tfds`) for `--steps` steps
(0: one epoch, 390 steps), three ways, back to back in one process:
  grain:       what `config.input_on_device=False` runs: the in-memory grain iterator
               (num_workers=0, per-record augmentation and normalisation on the host), one
               jitted step per batch, the batch sharded onto the devices;
  device x1:   `config.input_on_device=True, steps_per_dispatch=1`: the uint8 dataset on the
               device, every batch drawn there (data/device_data.py), one step per call;
  device xK:   the same with K = `--steps_per_dispatch` steps per call (one lax.scan).
Compilation (and the first grain batch) is excluded: each path runs its compiled sizes once
before the clock starts. Each of `--repeats` rounds times every path once, in turn; the
table gives the medians (images/s and ms/step) and each path's ratio to grain. Decoding the
dataset into memory (~15 s) is shared by all paths and not timed. The 1-minute load average
is printed first: only figures from an idle machine count (check `uptime`).

Smoke run (a few seconds after the decode): `python -m tools.bench_input_on_device --steps=20
--repeats=1`.

Measured 2026-12-05 on this project's 2-core CPU machine (1 CPU device), load 1.8 at the
start, training paused; one epoch (390 steps of 128), medians of 3 repeats:
  | augment | grain img/s | device x1 img/s | device x39 img/s | x1 / grain | x39 / grain |
  | none    | 11,451      | 16,662          | 17,658           | 1.46x      | 1.54x       |
  | cifar   | 11,610      | 16,707          | 17,648           | 1.44x      | 1.52x       |
On 2 CPU cores the step itself (7.3 ms of MLP compute) bounds both; on an accelerator the
grain path stays at its host rate while the device path follows the step.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax


def _config(args, augment: str):
  from configs import mlp_c10_cpu  # pylint: disable=import-outside-toplevel

  c = mlp_c10_cpu.get_config()
  c.data_dir, c.augment, c.train_subset = args.data_dir, augment, args.train_subset
  c.model.width = args.width
  c.num_workers, c.in_memory = 0, True
  return c


def _model(config):
  from rankdeficit import models  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import optim  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import steps  # pylint: disable=import-outside-toplevel

  model = models.create_model(config.model, 10)
  tx = optim.create_optimizer(config, input_pipeline.steps_per_epoch(config))
  state = steps.create_train_state(
    jax.random.PRNGKey(0), model, tx, input_pipeline.input_shape(config)
  )
  return model, tx, state


def grain_path(config, mesh):
  """`run(num_steps) -> seconds`: grain batches into the jitted step (as train.py does)."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import losses  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import sharding  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import steps  # pylint: disable=import-outside-toplevel

  model, tx, state = _model(config)
  repl = sharding.replicated_sharding(mesh)
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      loss_fn=losses.cross_entropy,
      temperature_fn=lambda _: 1.0,
      preprocess=input_pipeline.device_preprocess(config),
    ),
    in_shardings=(repl, sharding.data_sharded(mesh)),
    out_shardings=(repl, repl),
    donate_argnums=0,
  )
  it = input_pipeline.create_train_iterator(config, seed=0)
  box = {'state': jax.device_put(state, repl)}

  def run(num_steps: int) -> float:
    start, metrics = time.perf_counter(), []
    for _ in range(num_steps):
      batch = sharding.shard_batch(next(it), mesh)
      box['state'], m = step(box['state'], batch)
      metrics.append(m)
    jax.block_until_ready((box['state'], metrics))
    return time.perf_counter() - start

  run(2)  # compile, and the iterator's first batch
  return run


def device_path(config, mesh, per_dispatch: int, num_steps: int):
  """`run(num_steps) -> seconds`: `per_dispatch` steps per call on the device dataset."""
  from rankdeficit.data import device_data  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import device_loop  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import losses  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import sharding  # pylint: disable=import-outside-toplevel

  model, tx, state = _model(config)
  repl = sharding.replicated_sharding(mesh)
  dataset = device_data.load_device_dataset(config, mesh)
  key = jax.device_put(device_data.data_key(config.seed), repl)
  train = device_loop.jitted_train_steps(
    config, model, tx, losses.cross_entropy, lambda _: 1.0, mesh
  )
  box = {'state': jax.device_put(state, repl)}
  sizes = [per_dispatch] * (num_steps // per_dispatch) + [num_steps % per_dispatch] * bool(
    num_steps % per_dispatch
  )

  def run(_: int) -> float:
    start, metrics = time.perf_counter(), []
    for n in sizes:
      box['state'], m = train(box['state'], dataset, key, num_steps=n)
      metrics.append(m)
    jax.block_until_ready((box['state'], metrics))
    return time.perf_counter() - start

  for n in sorted(set(sizes)):  # compile every size (the state is donated: keep the new one)
    box['state'], _ = train(box['state'], dataset, key, num_steps=n)
  jax.block_until_ready(box['state'])
  return run


def measure(args, augment: str, mesh) -> dict[str, list[float]]:
  """{path: [seconds of `num_steps` steps per repeat]}, the paths interleaved per repeat."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  config = _config(args, augment)
  num_steps = args.steps or input_pipeline.steps_per_epoch(config)
  paths = {
    'grain': grain_path(config, mesh),
    'device x1': device_path(config, mesh, 1, num_steps),
    f'device x{args.steps_per_dispatch}': device_path(
      config, mesh, args.steps_per_dispatch, num_steps
    ),
  }
  seconds = {name: [] for name in paths}
  for _ in range(args.repeats):
    for name, run in paths.items():
      seconds[name].append(run(num_steps))
  return {'num_steps': num_steps, 'batch_size': config.batch_size, 'seconds': seconds}


def report(augment: str, measured: dict) -> None:
  steps_, batch = measured['num_steps'], measured['batch_size']
  medians = {name: statistics.median(s) for name, s in measured['seconds'].items()}
  grain = medians['grain']
  print(f'augment={augment}: {steps_} steps of batch {batch}, medians of the repeats')
  print('  | path | images/s | ms/step | vs grain |')
  for name, sec in medians.items():
    print(
      f'  | {name} | {steps_ * batch / sec:,.0f} | {1e3 * sec / steps_:.2f} | {grain / sec:.2f}x |',
      flush=True,
    )


def main(argv=None) -> None:
  from rankdeficit.training import sharding  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--data_dir', default='data/tfds')
  parser.add_argument('--steps', type=int, default=0, help='steps per timing (0: one epoch)')
  parser.add_argument('--repeats', type=int, default=3, help='median of, per path')
  parser.add_argument('--augment', default='none,cifar', help='comma-separated')
  parser.add_argument('--steps_per_dispatch', type=int, default=39)
  parser.add_argument('--width', type=int, default=512)
  parser.add_argument('--train_subset', type=int, default=0, help='0: all 50,000 images')
  args = parser.parse_args(argv)
  print(
    f'load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; '
    f'{jax.device_count()} {jax.default_backend()} device(s); MLP 8x{args.width}',
    flush=True,
  )
  mesh = sharding.create_mesh()
  for augment in args.augment.split(','):
    report(augment, measure(args, augment, mesh))


if __name__ == '__main__':
  main()
