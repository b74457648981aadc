"""Rank-deficit in the attention softmax: ViT on CIFAR-10 at attention x output temperatures.

    python -m experiments.attention_temperature [--seeds=3]
        [--outdir=experiments/results/beyond_cpu] [--runs_dir=DIR] [--data_dir=DIR]
        [--render_only] [--list] [--quick] [--taus=0.25,1,4] [--temperatures=1,100]
        [--compilation_cache=DIR]

Issue 12.1. Every attention layer applies softmax(q k^T / (tau sqrt(d_head))), the paper's
temperature softmax with its own temperature tau (`model.attention_temperature`); the
output softmax has T (`temperature`). For tau in {0.25, 1, 4} x T in {1, 100} x seeds, it
trains the CPU-sized ViT of `configs/vit_c10_cpu.py` from scratch (runs that finished are
skipped, killed ones resume: `rankdeficit.experiment.run_point`), analyses each run once
(kappa / rho), then renders from the run directories alone
(`experiments/figures/beyond_attention.py`) `attention_temperature.png`, `.md` (caption +
tables) and `.csv` into --outdir. Runs live in `<runs_dir>/vit_c10-tau<tau>/T<T>_s<seed>/`
(default runs_dir: `<outdir>/runs`, git-ignored). Order: seed-major, so an interrupted
sweep has every configuration of seed 0 before seed 1 starts.

`--quick`: a few steps on a few hundred images and a tiny analysis, in separate run folders
(`vit_c10_quick-...`), to check the pipeline end to end (not a result).

Cost of the full preset (18 runs, one process), estimated ~25 min (range 22-30) on 2
otherwise idle CPU cores: ~2,350 CPU-seconds = one-time decoding of the CIFAR-10 and MNIST
splits into memory (~80 CPU-s) + 6 first-seed runs (~165 CPU-s each: XLA compilation, 156
steps, 9 monitor calls, the final pass over the 10k test images, analysis) + 12 runs that
reuse the compiled executables (`--compilation_cache`, ~105 CPU-s each), divided by an
assumed 1.3-1.8 busy cores. Measured on 2 cores shared with jobs at load average 8-10:
40-step runs in one process took 216 CPU-s (first: decoding + compiling), 137 CPU-s
(decoded, compiling) and 76 CPU-s (decoded, cached executables) -- wall time was twice that
(the process got half a core); a batch-128 train step took 0.47 CPU-s (batch 64: taken as
half) and a monitor call ~1.7 CPU-s (a quarter of the measured 6.7 s at batch 256).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Sequence

from absl import logging

from experiments.figures import beyond_attention
from experiments.figures.render import MissingRuns
from experiments.figures.runs import Request
from experiments.figures.runs import Setting
from experiments.figures.runs import point
from experiments.figures.runs import read_run
from experiments.figures.runs import run_dir
from rankdeficit import experiment
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import runtime

OUTDIR = os.path.join('experiments', 'results', 'beyond_cpu')
TAUS = (0.25, 1.0, 4.0)
TEMPERATURES = (1.0, 100.0)
SEEDS = 3

# Analysis sized to the budget: kappa / rho from probes on 1,000 images per split, 1,024
# coordinates per layer (a ViT block output has 65 x 64 = 4,160), 10 probe epochs.
_ANALYSIS = AnalysisConfig.from_overrides(
  {
    'max_examples': 1000,
    'max_dims': 1024,
    'probe_epochs': 10,
    'probe_batch_size': 256,
    'layer_ranks': False,
    'plots': False,
  }
)
FULL = Setting(
  'vit_c10',
  'vit_c10_cpu',
  (),
  (
    'ViT (patch 4, width 64, depth 4, 4 heads), CIFAR-10 JPEG (10k train, 1 epoch), from '
    'scratch, OOD MNIST'
  ),
  _ANALYSIS,
  minutes=1.4,
)
QUICK = Setting(
  'vit_c10_quick',
  'vit_c10_cpu',
  (
    ('train_subset', 256),
    ('batch_size', 32),
    ('num_train_steps', 6),
    ('warmup_epochs', 0),
    ('lr_milestones', ()),
    ('metrics_every_steps', 3),
    ('metrics_batch_size', 32),
    ('max_feature_dims', 256),
    ('eval_batch_size', 500),
    ('eval_every_steps', 10**9),
    ('checkpoint_every_steps', 6),
    ('log_every_steps', 3),
  ),
  'ViT smoke budget (6 steps)',
  AnalysisConfig.from_overrides(
    {
      'max_examples': 200,
      'max_dims': 256,
      'probe_epochs': 2,
      'probe_batch_size': 128,
      'layer_ranks': False,
      'plots': False,
    }
  ),
  minutes=3,
)


def _floats(text: str) -> tuple[float, ...]:
  return tuple(float(x) for x in text.split(',') if x)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--seeds', type=int, default=SEEDS)
  p.add_argument('--outdir', default=OUTDIR)
  p.add_argument('--runs_dir', default=None, help='run folders (default: <outdir>/runs)')
  p.add_argument('--data_dir', default=None, help="tfds data_dir (default: the config's)")
  p.add_argument('--render_only', action='store_true', help='never train or analyse')
  p.add_argument('--list', action='store_true', help='print the plan and its cost, run nothing')
  p.add_argument('--quick', action='store_true', help='smoke-test budget (not a result)')
  p.add_argument(
    '--compilation_cache',
    default=None,
    help="JAX persistent compilation cache (default <runs_dir>/jax_cache; '' = "
    'off): the runs of one (tau, T) share executables, so only the first '
    'seed compiles',
  )
  p.add_argument('--taus', type=_floats, default=TAUS)
  p.add_argument('--temperatures', type=_floats, default=TEMPERATURES)
  args = p.parse_args(argv)
  if args.seeds < 1:
    p.error('--seeds must be >= 1')
  for name in ('taus', 'temperatures'):
    if not getattr(args, name) or min(getattr(args, name)) <= 0:
      p.error(f'--{name} must be a comma-separated list of positive numbers')
  args.runs_dir = args.runs_dir or os.path.join(args.outdir, 'runs')
  if args.compilation_cache is None:
    args.compilation_cache = os.path.join(args.runs_dir, 'jax_cache')
  return args


def request(tau: float, temperatures: Sequence[float]) -> Request:
  """The runs of one attention temperature (folder suffix `tau<tau>`)."""
  return Request(
    'attention',
    tuple(temperatures),
    variant=f'tau{tau:g}',
    overrides=(('model.attention_temperature', float(tau)),),
  )


def plan(args: argparse.Namespace) -> list[tuple[str, Request, float, int]]:
  """(workdir, request, T, seed) of every run, seed-major."""
  setting = QUICK if args.quick else FULL
  return [
    (
      run_dir(args.runs_dir, setting, request(tau, args.temperatures), t, s),
      request(tau, args.temperatures),
      t,
      s,
    )
    for s in range(args.seeds)
    for tau in args.taus
    for t in args.temperatures
  ]


def train_missing(args: argparse.Namespace) -> None:
  """Trains and analyses every planned run that is not finished (diverged ones are skipped)."""
  runtime.enable_compilation_cache(args.compilation_cache)
  setting = QUICK if args.quick else FULL
  for workdir, req, t, s in plan(args):
    try:
      experiment.run_point(point(setting, req, t, s, workdir=workdir, data_dir=args.data_dir))
    except FloatingPointError as e:  # diverged: reported, left out of the figure
      logging.warning('%s diverged, left out: %s', workdir, e)


def load_groups(args: argparse.Namespace) -> dict[tuple[float, float], list]:
  """{(tau, T): [finished and analysed runs]}."""
  groups: dict[tuple[float, float], list] = {}
  for workdir, req, t, s in plan(args):
    run = read_run(workdir, t, s)
    if run is not None and run.analysis is not None:
      tau = dict(req.overrides)['model.attention_temperature']
      groups.setdefault((tau, t), []).append(run)
  return groups


def describe_plan(args: argparse.Namespace) -> str:
  setting = QUICK if args.quick else FULL
  runs = plan(args)
  todo = [w for w, *_ in runs if not experiment.is_done(w, analysed=True)]
  return (
    f'{len(runs)} runs ({len(args.taus)} tau x {len(args.temperatures)} T x '
    f'{args.seeds} seeds) of {setting.label} under {args.runs_dir}; {len(todo)} to '
    f'train or analyse, ~{len(todo) * setting.minutes:.0f} min on 2 idle CPU cores '
    f'({setting.minutes:g} min per run incl. analysis).'
  )


def command_line(args: argparse.Namespace) -> str:
  argv = [
    'python',
    '-m',
    'experiments.attention_temperature',
    f'--seeds={args.seeds}',
    f'--outdir={args.outdir}',
  ]
  argv += ['--quick'] if args.quick else []
  if args.taus != TAUS:
    argv.append('--taus=' + ','.join(f'{x:g}' for x in args.taus))
  if args.temperatures != TEMPERATURES:
    argv.append('--temperatures=' + ','.join(f'{x:g}' for x in args.temperatures))
  return ' '.join(shlex.quote(a) for a in argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command; returns the exit status (1 when nothing could be rendered)."""
  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  args = parse_args(argv)
  print(describe_plan(args), flush=True)
  if args.list:
    return 0
  t0 = time.perf_counter()
  if not args.render_only:
    train_missing(args)
  expected = [(tau, t) for tau in args.taus for t in args.temperatures]
  try:
    beyond_attention.render(args.outdir, load_groups(args), expected, command_line(args))
  except MissingRuns as e:
    print(f'{beyond_attention.NAME}: missing: {e}', flush=True)
    return 1
  print(
    f'{beyond_attention.NAME}: ok ({time.perf_counter() - t0:.0f} s) -> '
    f'{os.path.join(args.outdir, beyond_attention.NAME)}.{{png,md,csv}}',
    flush=True,
  )
  return 0


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  sys.exit(main())
