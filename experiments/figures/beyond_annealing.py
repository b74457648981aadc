"""Temperature annealing (issue 12.3): keep high-T's OOD detection, recover T = 1's generalization?

The paper's trade-off: a high T (low logits norm) compresses representations and helps OOD
detection (NECO), T = 1 generalizes better out of distribution (rho). Annealing T from 100
to 1 during training (`config.temperature_schedule`: cosine over training, or one step at
half of training) might get both. The grid trains an MLP and a ResNet-20 with constant
T = 1, constant T = 100 and the two annealed schedules; every metric is measured on the
final model (analysis at the final temperature, T = 1 for the annealed runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.figures import grid
from experiments.figures import runs
from experiments.figures.beyond_knob import SMOKE_ANALYSIS
from experiments.figures.render import mean_std
from experiments.figures.render import pyplot
from rankdeficit.analysis.config import AnalysisConfig

HIGH_T = 100.0

MLP = runs.Setting(
  'anneal_mlp',
  'mlp_c10_cpu',
  (
    ('model.width', 256),
    ('model.depth', 8),
    ('model.init', 'kaiming'),
    ('train_subset', 5000),
    ('num_epochs', 4),
    ('eval_every_steps', 10**9),
    ('metrics_every_steps', 0),
    ('log_every_steps', 10),
    ('checkpoint_every_steps', 10**4),
  ),
  'MLP 8x256 (Kaiming init), CIFAR-10 JPEG (first 5,000 train images), 4 epochs of SGD '
  'lr 0.05 (no momentum, batch 128: 156 steps), OOD MNIST',
  AnalysisConfig.from_overrides(
    {
      'max_examples': 2000,
      'probe_epochs': 10,
      'max_dims': 256,
      'layer_ranks': False,
      'plots': False,
    }
  ),
)
RESNET20 = runs.Setting(
  'anneal_resnet20',
  'resnet20_c10_cpu',
  (
    ('train_subset', 2000),
    ('num_epochs', 2),
    ('lr_milestones', ()),
    ('eval_every_steps', 10**9),
    ('metrics_every_steps', 0),
    ('log_every_steps', 3),
    ('checkpoint_every_steps', 10**4),
  ),
  'ResNet-20, CIFAR-10 JPEG (first 2,000 train images, CIFAR augmentation), 2 epochs of '
  'SGD lr 0.1, momentum 0.9, wd 1e-4 (batch 128: 30 steps), OOD MNIST',
  AnalysisConfig.from_overrides(
    {'max_examples': 500, 'probe_epochs': 10, 'max_dims': 512, 'layer_ranks': False, 'plots': False}
  ),
)
SETTINGS = ((MLP, 'MLP'), (RESNET20, 'ResNet-20'))
SMOKE = (('num_train_steps', 4), ('train_subset', 500), ('num_epochs', 2))

# (cell name, label, overrides given the run's epochs)
SCHEDULES = (
  ('T1', 'T = 1', lambda epochs: ()),
  (f'T{HIGH_T:g}', f'T = {HIGH_T:g}', lambda epochs: ()),
  (
    'cosine',
    f'cosine {HIGH_T:g} -> 1',
    lambda epochs: (('temperature_schedule', 'cosine'), ('final_temperature', 1.0)),
  ),
  (
    'step',
    f'step {HIGH_T:g} -> 1 at half',
    lambda epochs: (
      ('temperature_schedule', 'step'),
      ('final_temperature', 1.0),
      ('temperature_milestones', (epochs / 2,)),
    ),
  ),
)

METRICS = (
  ('accuracy', 'test accuracy', True),
  ('kappa', 'kappa (effective depth)', True),
  ('rho', 'rho (OOD gen. loss)', True),
  ('solution_rank', 'SR', False),
  ('auroc', 'NECO AUROC', True),
  ('fpr95_neco', 'NECO FPR@95', True),
)


def _smoke(setting: runs.Setting) -> runs.Setting:
  return runs.Setting(
    setting.name + '_smoke',
    setting.config,
    setting.overrides + SMOKE,
    setting.label + ' [smoke budget]',
    SMOKE_ANALYSIS,
  )


def cells(smoke: bool = False) -> list[grid.Cell]:
  """Every model under every schedule."""
  out = []
  for setting, model in SETTINGS:
    setting = _smoke(setting) if smoke else setting
    epochs = dict(setting.overrides)['num_epochs']
    for name, label, overrides in SCHEDULES:
      t = 1.0 if name == 'T1' else HIGH_T
      out.append(
        grid.Cell(name, setting, overrides(epochs), t, (('model', model), ('schedule', label)))
      )
  return out


def run_values(run: runs.Run) -> dict[str, Any]:
  a = run.analysis
  return {
    'accuracy': grid.accuracy(run),
    'kappa': runs.metric(a, 'kappa'),
    'rho': runs.metric(a, 'rho'),
    'solution_rank': a.get('solution_rank'),
    'auroc': grid.neco(a, 'auroc'),
    'fpr95_neco': grid.neco(a, 'fpr95_neco'),
    'final_temperature': a.get('temperature'),
  }


def cell_stats(loaded: grid.Loaded, cell: grid.Cell) -> dict[str, tuple[float, float]]:
  """Mean and std over seeds of every metric (and the final T) of one cell."""
  vals = [run_values(r) for r in loaded.of(cell)]
  keys = [m for m, _, _ in METRICS] + ['final_temperature']
  return {k: mean_std([v[k] for v in vals]) for k in keys}


def tradeoff(loaded: grid.Loaded) -> dict[str, dict[str, dict[str, float]]]:
  """Per model and annealed schedule: the share of T=100's AUROC gain kept and of its rho
  loss recovered, (anneal - T1) / (T100 - T1) and (T100 - anneal) / (T100 - T1); NaN
  unless T = 100 is at least 1 point better at detection (AUROC) or worse at OOD
  generalization (rho) than T = 1: a share of a gain that is not there means nothing."""
  out = {}
  for setting, model in SETTINGS:
    by = {
      c.name: cell_stats(loaded, c)
      for c in loaded.cells
      if c.get('model') == model and loaded.of(c)
    }
    if 'T1' not in by or f'T{HIGH_T:g}' not in by:
      continue
    low, high = by['T1'], by[f'T{HIGH_T:g}']
    for name in ('cosine', 'step'):
      if name not in by:
        continue
      gap_auroc = high['auroc'][0] - low['auroc'][0]
      gap_rho = high['rho'][0] - low['rho'][0]
      out.setdefault(model, {})[name] = {
        'auroc_gain_kept': (by[name]['auroc'][0] - low['auroc'][0]) / gap_auroc
        if gap_auroc >= 0.01
        else float('nan'),
        'rho_loss_recovered': (high['rho'][0] - by[name]['rho'][0]) / gap_rho
        if gap_rho >= 0.01
        else float('nan'),
        'accuracy_vs_T1': by[name]['accuracy'][0] - low['accuracy'][0],
      }
  return out


def _table(loaded: grid.Loaded) -> tuple[list[str], list[list], list[dict]]:
  header = ['model', 'schedule', 'final T', 'seeds'] + [t for _, t, _ in METRICS]
  rows, csv_rows = [], []
  for cell in loaded.cells:
    if not loaded.of(cell):
      continue
    stats = cell_stats(loaded, cell)
    seeds = len(loaded.of(cell))
    rows.append(
      [cell.get('model'), cell.get('schedule'), f'{stats["final_temperature"][0]:g}', seeds]
      + [grid.cell_text(*stats[k], pct=p) for k, _, p in METRICS]
    )
    csv_rows.append(
      {
        'model': cell.get('model'),
        'cell': cell.name,
        'schedule': cell.get('schedule'),
        'seeds': seeds,
        **{f'{k}_{s}': v for k, (m, sd) in stats.items() for s, v in (('mean', m), ('std', sd))},
      }
    )
  return header, rows, csv_rows


def _schedule_panel(ax, loaded: grid.Loaded) -> None:
  """T over training as the runs logged it (train/temperature, first seed of each MLP cell)."""
  for cell in loaded.cells:
    if cell.get('model') != SETTINGS[0][1] or not loaded.of(cell):
      continue
    steps, values = (
      loaded.of(cell)[0].events('train/temperature').get('train/temperature', ((), ()))
    )
    if len(steps):
      ax.plot(steps, values, '.-', label=cell.get('schedule'))
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_title(f'logged T ({SETTINGS[0][1]}, one seed)', fontsize=9)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=6)


def _draw(loaded: grid.Loaded):
  plt = pyplot()
  fig, axes = plt.subplots(1, len(METRICS) + 1, figsize=(2.9 * (len(METRICS) + 1), 3.3))
  _schedule_panel(axes[0], loaded)
  positions = np.arange(len(SCHEDULES))
  for j, (_, model) in enumerate(SETTINGS):
    model_cells = [c for c in loaded.cells if c.get('model') == model]
    stats = [cell_stats(loaded, c) if loaded.of(c) else None for c in model_cells]
    for ax, (key, _, pct) in zip(axes[1:], METRICS):
      scale = 100 if pct else 1
      xs = [p + (j - 0.5) * 0.25 for p, s in zip(positions, stats) if s]
      ms = [scale * s[key][0] for s in stats if s]
      sd = [scale * s[key][1] for s in stats if s]
      ax.errorbar(xs, ms, yerr=sd, fmt='os'[j % 2], capsize=2, label=model)
  for ax, (_, title, pct) in zip(axes[1:], METRICS):
    ax.set_xticks(positions, [name for name, _, _ in SCHEDULES], fontsize=8)
    ax.set_title(title + (' %' if pct else ''), fontsize=9)
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  return fig


def _tradeoff_text(found: dict) -> str:
  def fmt(x):
    return 'n/a (T = 100 has none)' if np.isnan(x) else f'{100 * x:.0f}%'

  parts = [
    f'{model} {name}: AUROC gain kept {fmt(v["auroc_gain_kept"])}, rho loss '
    f'recovered {fmt(v["rho_loss_recovered"])}, accuracy vs T=1 '
    f'{100 * v["accuracy_vs_T1"]:+.1f} points'
    for model, by in found.items()
    for name, v in by.items()
  ]
  return '; '.join(parts) or 'not computable (T = 1 or T = 100 runs missing)'


def render(loaded: grid.Loaded, outdir: str) -> None:
  """temperature_annealing.png/.md/.csv from the loaded runs."""
  header, rows, csv_rows = _table(loaded)
  settings = '; '.join(
    f'{model}: {s.label}, analysis {s.analysis.overrides()}'
    for s, model in {c.setting: c.get('model') for c in loaded.cells}.items()
  )
  caption = (
    'Temperature annealing (issue 12.3). Constant T = 1, constant T = '
    f'{HIGH_T:g}, and T annealed {HIGH_T:g} -> 1 by a cosine over training (`cosine`) or '
    'one step at half of training (`step`). Left: T as logged during training. Then, on '
    'the final model (analysis at the final T): test accuracy (whole CIFAR-10 test split), '
    'kappa and rho (paper convention), SR, and NECO OOD detection of MNIST (AUROC, '
    'FPR@95 in the NECO convention), mean +- std over seeds.\n\n'
    f'Models/data/budget: {settings}. {grid.runs_note(loaded)}\n\n'
    'Does annealing keep the detection gain and recover generalization? Share of the '
    f'T = {HIGH_T:g} AUROC gain over T = 1 kept by the annealed run, share of its rho '
    f'increase recovered: {_tradeoff_text(tradeoff(loaded))}.\n\n'
    'Budget: about 20 CPU-seconds per MLP run and 2-3.5 CPU-minutes per ResNet-20 run '
    '(mostly compilation and the final evaluation of the 10,000 test images), far below '
    "the paper's budgets (MLP 100 epochs, ResNet-20 164 epochs on 50,000 images); at "
    "this budget the results may or may not show the paper's effects."
  )
  grid.save_outputs(
    outdir, 'temperature_annealing', _draw(loaded), caption, header, rows, csv_rows, loaded.seeds
  )


EXPERIMENT = grid.Experiment('temperature_annealing', cells, render)
