r"""A population of MLP points vs the same points trained one after another (issue 22).

    python -m tools.bench_population [--data_dir=data/tfds] [--train_subset=10000] \
        [--epochs=2] [--temperatures=1,10,100] [--seeds=2] [--width=512] [--depth=7] \
        [--steps_per_dispatch=78]
    python -m tools.bench_population --smoke     # the offline digits, a few steps

Trains the same points (configs/mlp_c10_cpu.py: an MLP on the CIFAR-10 JPEG copy,
`train_subset` images, T x seed; default 6 points) twice in one process, back to back, each
half in a fresh temporary root: (1) one after another through `experiment.run_point`, the
single-run path, with the data on the device (`input_on_device=True`) and the same
`steps_per_dispatch`; (2) as one population (`population_runs.train_group`). Prints the
total wall time of each half and their ratio. Both include everything a user waits for:
set-up, compilations, training, the final evaluation and checkpoint; the dataset is
decoded and TensorFlow imported once before either half, so neither pays for it.

Measured 2026-12-05 on this project's 2-core CPU machine, load 1.9, training paused; the
default 6 points (T in {1, 10, 100} x 2 seeds, MLP 7+1 x 512, 10,000 images, 2 epochs = 156
steps each, 78 steps per dispatch): one after another 20.8 s, one population 13.9 s
(1.50x faster; 3.4 s of it in the timed steps of its dispatches, the rest set-up, compiles,
evaluation and checkpoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time


def points(args, root: str) -> list:
  """The benchmark's points (T x seed) in `root`, train only."""
  from rankdeficit import experiment  # pylint: disable=import-outside-toplevel

  if args.smoke:
    config = 'configs/quickstart.py'
    common = {'num_train_steps': 20, 'learning_rate': 0.005, 'model.width': 64}
  else:
    config = 'mlp_c10_cpu'
    common = {
      'model.width': args.width,
      'model.depth': args.depth,
      'model.init': 'kaiming',
      'train_subset': args.train_subset,
      'num_epochs': args.epochs,
    }
    if args.data_dir:
      common['data_dir'] = args.data_dir
  common.update(
    input_on_device=True,
    steps_per_dispatch=args.steps_per_dispatch,
    log_every_steps=args.steps_per_dispatch,
    eval_every_steps=10**9,  # the final evaluation only
    checkpoint_every_steps=10**9,  # the final checkpoint only
    metrics_every_steps=0,
  )
  return [
    experiment.Point(
      config, {**common, 'temperature': t, 'seed': s}, os.path.join(root, f'T{t:g}_s{s}')
    )
    for s in range(args.seeds)
    for t in args.temperatures
  ]


def warm_up(point) -> None:
  """Decodes the dataset into this process's memory and imports TensorFlow (CLU's writer),
  so that neither half pays for them."""
  from clu import metric_writers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  from rankdeficit import experiment  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import device_data  # pylint: disable=import-outside-toplevel

  device_data.host_arrays(experiment.build_config(point))


def one_after_another(pts) -> float:
  """Seconds to train `pts` one by one with the single-run path."""
  from rankdeficit import experiment  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  for point in pts:
    experiment.run_point(point, stage='train')
  return time.perf_counter() - start


def as_population(pts) -> tuple[float, object]:
  """Seconds to train `pts` as one population, and its `PopulationResult`."""
  from rankdeficit import population_runs  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  result = population_runs.train_group(pts)
  return time.perf_counter() - start, result


def run(args) -> dict[str, float]:
  """Both halves (see the module docstring); returns their seconds and the ratio."""
  with tempfile.TemporaryDirectory() as root:
    alone = points(args, os.path.join(root, 'alone'))
    together = [
      dataclasses.replace(p, workdir=p.workdir.replace('alone', 'population')) for p in alone
    ]
    warm_up(alone[0])
    sequential = one_after_another(alone)
    population, result = as_population(together)
  steps = result.steps_trained
  print(
    f'{len(alone)} points x {steps} steps, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}'
  )
  print(f'one after another: {sequential:.1f} s')
  print(
    f'one population:    {population:.1f} s ({result.dispatch_seconds:.1f} s in the '
    f'{result.steps_timed} timed steps of its dispatches)'
  )
  print(f'ratio: {sequential / population:.2f}x faster as a population')
  return {'sequential_s': sequential, 'population_s': population, 'ratio': sequential / population}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--data_dir', default=None, help="tfds data_dir (default: the config's)")
  parser.add_argument('--train_subset', type=int, default=10_000)
  parser.add_argument('--epochs', type=int, default=2)
  parser.add_argument('--width', type=int, default=512)
  parser.add_argument('--depth', type=int, default=7)
  parser.add_argument(
    '--temperatures', default=(1.0, 10.0, 100.0), type=lambda s: [float(t) for t in s.split(',')]
  )
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--steps_per_dispatch', type=int, default=78)  # 10,000 // 128
  parser.add_argument('--smoke', action='store_true', help='the offline digits, 20 steps')
  return parser


def main(argv=None) -> dict[str, float]:
  return run(_parser().parse_args(argv))


if __name__ == '__main__':
  main()
