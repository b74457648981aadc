"""Throughput of the CIFAR training input pipeline (augment='cifar', batch 128).

  python -m tools.benchmark_input [--data_dir=DIR] [--dataset=cifar10_jpeg] [--seconds=10]
      [--workers=0,2]

Without --data_dir it imports a 5,000-image cifar10_jpeg subset from ../shared/data into a
temporary folder first. Prints images/s for each worker count.
"""
import argparse
import tempfile
import time


def measure(config, seconds: float) -> float:
  from rankdeficit import input_pipeline  # pylint: disable=import-outside-toplevel
  it = input_pipeline.create_train_iterator(config, seed=0)
  next(it)  # start-up (worker processes, first reads) is not counted
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(it)['image'].shape[0]
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
  args = parser.parse_args(argv)
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = tempfile.mkdtemp(prefix='rankdeficit_bench_')
    local_import.import_cifar10_jpeg(data_dir, limit_train=5000, limit_test=100)
  config = base.get_config()
  config.dataset, config.data_dir, config.augment = args.dataset, data_dir, 'cifar'
  config.batch_size = args.batch_size
  for workers in (int(w) for w in args.workers.split(',')):
    config.num_workers = workers
    rate = measure(config, args.seconds)
    print(f'{args.dataset} augment=cifar batch={args.batch_size} num_workers={workers}: '
          f'{rate:,.0f} images/s', flush=True)


if __name__ == '__main__':
  main()
