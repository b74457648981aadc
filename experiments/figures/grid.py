"""A grid of runs beyond the paper: cells x seeds, trained once, read back, tabulated.

An experiment of `experiments/results/beyond_cpu/` is a list of `Cell`s (one recipe each:
a `runs.Setting` plus overrides) run for `--seeds` seeds. Each run lives in
`<runs_dir>/<setting name>/<cell name>_s<seed>/`; `train_missing` trains and analyses what is
missing through `rankdeficit.experiment.run_point` (a killed run resumes, a finished one is
skipped), and a run that diverges gets a `diverged.txt` marker so later invocations do not
retrain it.
The renderer sees only `load_cells` (run directories, never training) and writes
`<name>.png` (< 300 KB), `<name>.md` (caption + table) and `<name>.csv` via `save_outputs`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
from typing import Any, Callable, Sequence

from absl import logging
import numpy as np

from experiments import markdown_table
from experiments.figures import render
from experiments.figures import runs
from rankdeficit import experiment

DIVERGED = 'diverged.txt'
BEYOND_RESULTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'results', 'beyond_cpu')


@dataclasses.dataclass(frozen=True)
class Cell:
  """One recipe of a grid: a setting plus overrides, run once per seed."""

  name: str  # folder prefix, e.g. 'kaiming_T100'
  setting: runs.Setting
  overrides: tuple[tuple[str, Any], ...] = ()  # dotted config keys on top of the setting's
  temperature: float = 1.0  # config.temperature (chosen at step 0 with target_logits_norm)
  info: tuple[tuple[str, Any], ...] = ()  # what the renderer groups by, e.g. ('init', ...)

  @property
  def key(self) -> str:
    """Unique within a grid: '<setting name>/<cell name>'."""
    return f'{self.setting.name}/{self.name}'

  def get(self, key: str, default=None):
    return dict(self.info).get(key, default)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A grid and how it is drawn."""

  name: str  # output stem, e.g. 'logits_norm_knob'
  cells: Callable[[bool], list[Cell]]  # smoke -> cells
  render: Callable[['Loaded', str], None]  # (loaded runs, outdir)


@dataclasses.dataclass
class Loaded:
  """Finished runs per cell key (analysed ones only), and the cells' diverged seeds."""

  cells: list[Cell]
  runs: dict[str, list[runs.Run]]
  diverged: dict[str, list[int]]
  seeds: int
  root: str

  def of(self, cell: Cell) -> list[runs.Run]:
    return self.runs.get(cell.key, [])


def workdir(root: str, cell: Cell, seed: int) -> str:
  return os.path.join(root, cell.setting.name, f'{cell.name}_s{seed}')


def request(cell: Cell) -> runs.Request:
  return runs.Request(cell.setting.name, (cell.temperature,), overrides=cell.overrides)


def train_missing(cells: Sequence[Cell], root: str, seeds: int, data_dir: str | None) -> None:
  """Trains and analyses every missing run, seed-major (a stopped grid has whole seeds)."""
  for seed in range(seeds):
    for cell in cells:
      wd = workdir(root, cell, seed)
      if os.path.exists(os.path.join(wd, DIVERGED)):
        continue
      point = runs.point(
        cell.setting, request(cell), cell.temperature, seed, workdir=wd, data_dir=data_dir
      )
      try:
        experiment.run_point(point)
      except FloatingPointError as e:  # the paper: "did not finish successfully"
        logging.warning('%s diverged, left out: %s', wd, e)
        with open(os.path.join(wd, DIVERGED), 'w') as f:
          f.write(f'{e}\n')


def load_cells(cells: Sequence[Cell], root: str, seeds: int) -> Loaded:
  """Reads the analysed runs of every cell (missing and diverged ones are skipped)."""
  found, diverged = {}, {}
  for cell in cells:
    for seed in range(seeds):
      wd = workdir(root, cell, seed)
      if os.path.exists(os.path.join(wd, DIVERGED)):
        diverged.setdefault(cell.key, []).append(seed)
        continue
      run = runs.read_run(wd, cell.temperature, seed)
      if run is not None and run.analysis is not None:
        found.setdefault(cell.key, []).append(run)
  return Loaded(list(cells), found, diverged, seeds, root)


# --- Per-run values read back from a run directory ---


def accuracy(run: runs.Run) -> float | None:
  """Test accuracy of the final model on the whole test split (analysis subset if absent)."""
  return run.train_results.get('eval/accuracy', (run.analysis or {}).get('test_accuracy'))


def _step0(run: runs.Run, name: str) -> float | None:
  """A step-0 value: train_results.json holds it unless the run was resumed; then the
  events written at step 0 do."""
  if name in run.train_results:
    return float(run.train_results[name])
  _, values = run.events('init/').get(name, ((), ()))
  return float(values[0]) if len(values) else None


def initial_norm(run: runs.Run) -> float | None:
  """n0: mean per-sample logits L2 norm at initialisation (first eval batch)."""
  return _step0(run, 'init/logits_norm')


def trained_temperature(run: runs.Run) -> float:
  """T the run trained at (chosen at step 0 under target_logits_norm; the initial T of a
  schedule)."""
  t = _step0(run, 'init/temperature')
  return float(run.config.get('temperature') if t is None else t)


def last_hidden_effective_rank(analysis: dict) -> float | None:
  hidden = analysis.get('hidden_layers') or runs.hidden_layers(analysis['id_probe_accuracy'])
  return (analysis.get('representation_effective_rank') or {}).get(hidden[-1])


def neco(analysis: dict, key: str) -> float | None:
  return (analysis.get('ood_detection') or {}).get(key)


def cell_text(mean: float, std: float, pct: bool = False, digits: int = 3) -> str:
  """'41.2 ± 0.8' (percent when `pct`), 'n/a' for NaN."""
  if np.isnan(mean):
    return 'n/a'
  scale = 100 if pct else 1
  return f'{scale * mean:.{digits}g} ± {scale * std:.2g}'


# --- Outputs ---


def save_outputs(
  outdir: str,
  name: str,
  fig,
  caption: str,
  header: Sequence[str],
  rows: Sequence[Sequence],
  csv_rows: Sequence[dict],
  seeds: int,
) -> None:
  """`<name>.png` (< 300 KB), `<name>.md` (caption, table, command) and `<name>.csv`."""
  os.makedirs(outdir, exist_ok=True)
  render.save_png(fig, os.path.join(outdir, f'{name}.png'))
  with open(os.path.join(outdir, f'{name}.md'), 'w') as f:
    f.write(
      f'![{name}]({name}.png)\n\n{caption}\n\n{markdown_table(header, rows)}\n\n'
      f'Regenerate (trains only missing runs): `python -m experiments.{name} '
      f'--seeds={seeds} --outdir={os.path.relpath(outdir)}`\n'
    )
  with open(os.path.join(outdir, f'{name}.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]) if csv_rows else ['cell'])
    writer.writeheader()
    writer.writerows(csv_rows)


def runs_note(loaded: Loaded) -> str:
  """Caption line: seeds found per cell, and the diverged ones."""
  found = sum(len(v) for v in loaded.runs.values())
  text = (
    f'{found} analysed run(s) of {len(loaded.cells)} cells x {loaded.seeds} seed(s) '
    f'under `{os.path.relpath(loaded.root)}`.'
  )
  if loaded.diverged:
    text += (
      ' Diverged (non-finite parameters, left out): '
      + ', '.join(f'{c} seed(s) {s}' for c, s in sorted(loaded.diverged.items()))
      + '.'
    )
  return text


# --- Command line ---


def parse_args(name: str, description: str, argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=description)
  p.add_argument('--seeds', type=int, default=3, help='seeds per cell')
  p.add_argument('--outdir', default=BEYOND_RESULTS, help=f'where {name}.png/.md/.csv go')
  p.add_argument('--runs_dir', default=None, help='run directories (default <outdir>/runs)')
  p.add_argument('--data_dir', default=None, help="tfds data_dir (default: each config's)")
  p.add_argument('--render_only', action='store_true', help='never train or analyse')
  p.add_argument(
    '--settings',
    default='',
    help='train only the cells of these setting names (e.g. anneal_mlp); render every finished run',
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help='tiny budget (a few steps per run, small analysis): plumbing check only',
  )
  args = p.parse_args(argv)
  if args.seeds < 1:
    p.error('--seeds must be >= 1')
  if args.smoke and args.outdir == BEYOND_RESULTS:
    p.error('--smoke: pass --outdir (smoke numbers must not overwrite the results)')
  args.runs_dir = args.runs_dir or os.path.join(args.outdir, 'runs')
  args.settings = [x for x in args.settings.split(',') if x]
  return args


def main(experiment: Experiment, description: str, argv: Sequence[str] | None = None) -> Loaded:
  """Trains what is missing (unless --render_only), then renders from the run dirs."""
  from rankdeficit.run import runtime  # pylint: disable=import-outside-toplevel

  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  args = parse_args(experiment.name, description, argv)
  cells = experiment.cells(args.smoke)
  unknown = sorted(set(args.settings) - {c.setting.name for c in cells})
  if unknown:
    raise SystemExit(
      f'--settings: unknown {unknown}; choose from {sorted({c.setting.name for c in cells})}.'
    )
  if not args.render_only:
    # Seeds of a cell compile identical programs, and the analysis programs depend only on
    # the shapes: the persistent cache compiles each once for the whole grid.
    runtime.enable_compilation_cache(os.path.abspath(os.path.join(args.runs_dir, 'jax_cache')))
    train_missing(
      [c for c in cells if not args.settings or c.setting.name in args.settings],
      args.runs_dir,
      args.seeds,
      args.data_dir,
    )
  loaded = load_cells(cells, args.runs_dir, args.seeds)
  if not loaded.runs:
    raise SystemExit(
      f'{experiment.name}: no analysed run under {args.runs_dir}; run without --render_only first.'
    )
  experiment.render(loaded, args.outdir)
  print(f'{experiment.name}: wrote {os.path.join(args.outdir, experiment.name)}.png/.md/.csv')
  return loaded
