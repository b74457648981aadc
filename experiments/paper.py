"""Every table and figure of the paper, regenerated from runs.

    python -m experiments.paper --list [--preset=cpu]
    python -m experiments.paper --preset=cpu [--only=figure_3,table_2] [--seeds=N]
        [--data_dir=data/tfds] [--render_only] [--settings=mlp_c10,...]
        [--outdir=DIR] [--runs_dir=DIR]
    python -m experiments.paper --preset=paper     # the paper's configs (clusters)

For each selected entry of `experiments.figures.REGISTRY` it hands the runs the entry needs
to `rankdeficit.experiment.run_point` (a finished run is skipped, a killed one resumes from
its checkpoint, each is analysed once, and its compact record is written), then renders
the entry from the run directories alone into `--outdir` (default
`experiments/results/paper_<preset>/`): `figure_<N>.png` + `figure_<N>.md`, or
`table_<N>.md` + `table_<N>.csv`. `--render_only` never trains: it reads each run from its
directory or, where that is
absent (a fresh clone), from its compact record in `--records_dir` (default
`<outdir>/records/`, committed; drawn into another `--outdir` without records, the
committed `experiments/results/paper_<preset>/records/`; `experiments.records`: configs,
analyses, monitor histories and scalars, no checkpoints), which is written for every
finished run; entries
whose runs are missing are reported and skipped; `--settings` trains only the runs of those settings
(renderers draw whatever runs exist, e.g. a Table 1 with one row). Runs go to `<outdir>/runs/`
(git-ignored) and are shared
between entries that ask for the same setting and temperature. With
$RANKDEFICIT_QUICK_SYNTHETIC set, Figures 6 and 21 use their scripts' --quick sizes (tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

from absl import logging

from experiments import records
from experiments.figures import REGISTRY
from experiments.figures import presets
from experiments.figures import runs as runs_lib
from experiments.figures import verdicts
from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import MissingRuns
from rankdeficit import experiment
from rankdeficit.run import runtime
from rankdeficit.run import workdir_lock

RESULTS = os.path.join(os.path.dirname(__file__), 'results')


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--preset', default='cpu', choices=sorted(presets.PRESETS))
  p.add_argument('--only', default='', help='comma-separated keys (see --list)')
  p.add_argument('--seeds', type=int, default=None, help='seeds per setting')
  p.add_argument('--list', action='store_true', help='list entries, their runs and cost')
  p.add_argument('--render_only', action='store_true', help='never train or analyse')
  p.add_argument(
    '--settings',
    default='',
    help='train only runs of these setting names (e.g. mlp_c10); render all',
  )
  p.add_argument('--outdir', default=None)
  p.add_argument('--runs_dir', default=None)
  p.add_argument(
    '--records_dir',
    default=None,
    help='compact run records (default <outdir>/records; with --render_only and no such '
    'folder, the committed experiments/results/paper_<preset>/records): written for every '
    'finished run, read where a run directory is absent',
  )
  p.add_argument(
    '--results_dir',
    default=runs_lib.RESULTS,
    help='where the results folders of runs trained by experiments.reproduce_table1 live',
  )
  p.add_argument('--data_dir', default=None, help="tfds data_dir (default: each config's)")
  args = p.parse_args(argv)
  keys = [k for k in args.only.split(',') if k]
  unknown = [k for k in keys if k not in REGISTRY]
  if unknown:
    p.error(f'--only: unknown {unknown}; choose from {", ".join(REGISTRY)}')
  if args.seeds is not None and args.seeds < 1:
    p.error('--seeds must be >= 1')
  args.keys = keys or list(REGISTRY)
  args.settings = [s for s in args.settings.split(',') if s]
  return args


def make_context(args: argparse.Namespace) -> Context:
  outdir = args.outdir or os.path.join(RESULTS, f'paper_{args.preset}')
  records = args.records_dir or os.path.join(outdir, 'records')
  if args.render_only and not args.records_dir and not os.path.isdir(records):
    # Drawn into another folder (a fresh clone, --outdir=/tmp/x): the committed records.
    records = os.path.join(RESULTS, f'paper_{args.preset}', 'records')
  return Context(
    preset=args.preset,
    outdir=outdir,
    root=args.runs_dir or os.path.join(outdir, 'runs'),
    seeds=args.seeds or presets.DEFAULT_SEEDS[args.preset],
    records=records,
    results=args.results_dir,
  )


def planned_runs(ctx: Context, entry: Entry) -> dict[str, tuple]:
  """workdir -> (setting, request, T, seed) of every run the entry needs."""
  plan = {}
  for request in entry.requests:
    setting = ctx.setting(request.paper)
    for t, s, workdir in ctx.workdirs(request):
      if workdir not in plan or request.analyze:
        plan[workdir] = (setting, request, t, s)
  return plan


def estimate_minutes(ctx: Context, entry: Entry, exclude: set[str] = frozenset()) -> float:
  return sum(
    setting.minutes for w, (setting, *_) in planned_runs(ctx, entry).items() if w not in exclude
  )


def list_entries(ctx: Context, keys: Sequence[str]) -> str:
  lines = [
    f'preset {ctx.preset}: {ctx.seeds} seed(s) by default; estimated minutes on 2 '
    f'busy CPU cores (runs shared with earlier entries counted once, in brackets alone)'
  ]
  seen: set[str] = set()
  for key in keys:
    entry = REGISTRY[key]
    runs = [
      f'{ctx.setting(r.paper).name}{"-" + r.variant if r.variant else ""} '
      f'T={",".join(f"{t:g}" for t in ctx.temperatures(r))} x{ctx.seeds_of(r)}'
      for r in entry.requests
      if ctx.temperatures(r)
    ] or ['no training (synthetic)']
    alone = estimate_minutes(ctx, entry)
    extra = estimate_minutes(ctx, entry, seen)
    seen.update(planned_runs(ctx, entry))
    cost = (
      f'~{extra:.0f} min new ({alone:.0f} alone)'
      if ctx.preset == 'cpu'
      else 'cluster scale (paper budgets, Table 4)'
    )
    lines.append(f'{key:<26} {entry.title}\n{"":<26} runs: {"; ".join(runs)}\n{"":<26} {cost}')
  return '\n'.join(lines)


def train_missing(
  ctx: Context, entry: Entry, data_dir: str | None, settings: Sequence[str] = ()
) -> None:
  """Trains/analyses the entry's missing runs (only of `settings` when given); every finished
  run's compact record is (re)written. A run another process holds (its workdir lock) is
  skipped, so several `paper` processes can share one runs folder."""

  def write_record(finished: experiment.Finished) -> None:
    records.write_record(finished.workdir, ctx.record_dir(finished.workdir))

  for workdir, (setting, request, t, s) in planned_runs(ctx, entry).items():
    if settings and setting.name not in settings:
      continue
    if setting.trained_by:  # another driver's runs: say how to train them, never train here
      if not any(map(experiment.is_done, (workdir, setting.trained_by.record(ctx.results, t, s)))):
        logging.warning('%s: not trained yet; run %s', workdir, setting.trained_by.command)
      continue
    point = runs_lib.point(setting, request, t, s, workdir=workdir, data_dir=data_dir)
    try:
      experiment.run_point(point, on_finished=write_record)
    except FloatingPointError as e:  # diverged (the paper: "did not finish successfully")
      logging.warning('%s failed, left out of the figures: %s', workdir, e)
    except workdir_lock.LockedError as e:  # another `paper` process trains it: leave it be
      logging.warning('%s skipped, drawn once it is finished: %s', workdir, e)


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
  """Runs the command; returns {key: 'ok' | 'missing: ...'}."""
  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  args = parse_args(argv)
  ctx = make_context(args)
  ctx.quick = bool(os.environ.get('RANKDEFICIT_QUICK_SYNTHETIC'))
  if args.list:
    print(list_entries(ctx, args.keys))
    return {}
  status = {}
  for key in args.keys:
    entry = REGISTRY[key]
    ctx.entry = entry
    t0 = time.perf_counter()
    if not args.render_only:
      train_missing(ctx, entry, args.data_dir, args.settings)
    try:
      entry.render(ctx)
      status[key] = 'ok'
    except MissingRuns as e:
      status[key] = f'missing: {e}'
    logging.info('%s: %s (%.0f s)', key, status[key], time.perf_counter() - t0)
    print(f'{key}: {status[key]}', flush=True)
  if os.path.isdir(ctx.outdir):
    verdicts.write_index(ctx.outdir)
  return status


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  sys.exit(0 if all(v == 'ok' for v in main().values()) else 1)
