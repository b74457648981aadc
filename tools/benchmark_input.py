"""Throughput of the training input pipeline against the train step it has to feed.

  python -m tools.benchmark_input [--data_dir=DIR] [--dataset=cifar10_jpeg] [--seconds=10]
      [--workers=0,2] [--augment=cifar] [--in_memory=both|on|off] [--model_width=2048]

Without --data_dir it imports a 5,000-image cifar10_jpeg subset from ../shared/data into a
temporary folder first. For each (in_memory, num_workers) it prints images/s, and it times
the jitted train step of the MLP 8 x `model_width` (the paper's CIFAR-10 MLP, batch 128) in
the same run, printing the ratio pipeline rate / step rate: a ratio >= 5 means the pipeline
can feed that model with room to spare. Run it on an idle machine (check `uptime`).
"""
import argparse
import tempfile
import time


def pipeline_rate(config, seconds: float) -> float:
  """Images per second from `create_train_iterator` (start-up excluded)."""
  from rankdeficit import input_pipeline  # pylint: disable=import-outside-toplevel
  it = input_pipeline.create_train_iterator(config, seed=0)
  next(it)  # start-up (decoding into memory, worker processes, first reads) is not counted
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(it)['image'].shape[0]
  return count / (time.perf_counter() - start)


def step_rate(config, seconds: float) -> float:
  """Images per second of the jitted MLP train step on one device (compile excluded)."""
  # pylint: disable=import-outside-toplevel
  import functools

  import jax
  import numpy as np

  from rankdeficit import losses, models, optim, steps
  model = models.create_model(config.model, 10)
  tx = optim.create_optimizer(config, steps_per_epoch=100)
  state = steps.create_train_state(jax.random.PRNGKey(0), model=model, tx=tx,
                                   image_shape=(32, 32, 3))
  step = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, loss_fn=losses.get_loss_fn('ce'),
      temperature_fn=losses.temperature_schedule('constant', 1.0, None, 1, [])),
      donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(config.batch_size, 32, 32, 3)).astype(np.float32),
           'label': rng.integers(0, 10, config.batch_size).astype(np.int32)}
  batch = jax.device_put(batch)
  for _ in range(3):  # compile and warm up
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    state, metrics = step(state, batch)
    count += config.batch_size
  jax.block_until_ready(metrics)
  return count / (time.perf_counter() - start)


def main(argv=None) -> None:
  from configs import base  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import local_import  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--dataset', default='cifar10_jpeg')
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--augment', default='cifar')
  parser.add_argument('--in_memory', default='both', choices=('both', 'on', 'off'))
  parser.add_argument('--model_width', type=int, default=2048)
  args = parser.parse_args(argv)
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = tempfile.mkdtemp(prefix='rankdeficit_bench_')
    local_import.import_cifar10_jpeg(data_dir, limit_train=5000, limit_test=100)
  config = base.get_config()
  base.mlp_recipe(config)
  config.model.width, config.model.depth = args.model_width, 8
  config.dataset, config.data_dir, config.augment = args.dataset, data_dir, args.augment
  config.batch_size = args.batch_size
  model_rate = step_rate(config, args.seconds)
  print(f'MLP 8x{args.model_width} train step, batch {args.batch_size}: '
        f'{model_rate:,.0f} images/s', flush=True)
  modes = {'both': (True, False), 'on': (True,), 'off': (False,)}[args.in_memory]
  for in_memory in modes:
    for workers in (int(w) for w in args.workers.split(',')):
      config.num_workers, config.in_memory = workers, in_memory
      rate = pipeline_rate(config, args.seconds)
      print(f'{args.dataset} augment={args.augment} batch={args.batch_size} '
            f'in_memory={in_memory} num_workers={workers}: {rate:,.0f} images/s = '
            f'{rate / model_rate:.1f}x the MLP step rate'
            f'{"" if rate >= 5 * model_rate else "  (below the 5x target)"}', flush=True)


if __name__ == '__main__':
  main()
