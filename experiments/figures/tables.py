"""Tables 1, 3, 6, 7, 8, 9: kappa / rho / SR per temperature beside the paper's numbers.

Table 1 reuses experiments/table1.py (PAPER_TABLE1, `aggregate`, `to_markdown`,
`write_tables`, as `experiments.reproduce_table1` does); the others share `render_sweep_table`.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

from experiments import records
from experiments import table1
from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import MissingRuns
from experiments.figures.render import mean_std
from experiments.figures.render import pct
from experiments.figures.runs import Request
from experiments.figures.runs import metric

_LOW = 100.0  # "low logit norm" temperature on every preset (the paper's Table 1: T=100)

# Paper Table 1 rows in the order a CPU stand-in is first matched to them.
_TABLE1_ROWS = (
  ('CIFAR-10 / MLP', 'cifar10/mlp'),
  ('CIFAR-10 / ResNet20', 'cifar10/resnet20'),
  ('CIFAR-10 / ResNet18', 'cifar10/resnet18'),
  ('CIFAR-100 / ResNet18', 'cifar100/resnet18'),
  ('CIFAR-100 / ResNet34', 'cifar100/resnet34'),
  ('ImageNet-1k / ResNet34', 'imagenet1k/resnet34'),
  ('ImageNet-1k / ResNet50', 'imagenet1k/resnet50'),
)
_T1 = tuple(Request(p, (1.0, _LOW), seeds=None) for _, p in _TABLE1_ROWS)


def _record(run, paper_row: str, name: str) -> dict:
  """A run as experiments/table1.py aggregates it (`records.flat_record`: NECO, conventions)."""
  rec = records.flat_record(run.analysis)
  rec.update(
    experiment=name,
    label=name,
    paper=paper_row,
    temperature=run.temperature,
    seed=run.seed,
    init_logits_norm=run.train_results.get('init/logits_norm'),
  )
  return rec


def render_table1(ctx: Context) -> None:
  """Table 1 through experiments/table1.py's aggregation (one row per distinct stand-in)."""
  records, lines, seen = [], [], set()
  for (paper_row, _), request in zip(_TABLE1_ROWS, _T1):
    setting = ctx.setting(request.paper)
    if setting.name in seen:
      continue
    try:
      runs = ctx.runs(request)
    except MissingRuns:
      continue
    seen.add(setting.name)
    lines.append(ctx.describe(request, runs) + f' Compared with the paper row {paper_row}.')
    records += [
      _record(r, paper_row, setting.label or setting.name) for rs in runs.values() for r in rs
    ]
  if not records:
    raise MissingRuns('no analysed run for Table 1')
  rows = table1.aggregate(records)
  with tempfile.TemporaryDirectory() as tmp:
    table1.write_tables(rows, tmp, ctx.preset)
    os.makedirs(ctx.outdir, exist_ok=True)
    shutil.copyfile(os.path.join(tmp, 'table1.csv'), os.path.join(ctx.outdir, 'table_1.csv'))
  ctx.save_markdown(table1.to_markdown(rows, ctx.preset), lines)


def render_sweep_table(ctx: Context, rows_spec, what: str) -> None:
  """Long-format table: one row per (paper model, T) with this run's numbers and the paper's.

  `rows_spec`: ((paper model, Request, {T: (kappa %, rho %, SR) or None}), ...)
  """
  header = [
    'paper model',
    'this run',
    'T',
    'seeds',
    'test acc',
    'kappa',
    'rho',
    'SR',
    'paper kappa',
    'paper rho',
    'paper SR',
  ]
  rows, lines = [], []
  for model, request, paper in rows_spec:
    try:
      runs = ctx.runs(request)
    except MissingRuns:
      continue
    lines.append(ctx.describe(request, runs) + f' Row: {model}.')
    for t in sorted(runs):
      rs = [r.analysis for r in runs[t]]
      sr = mean_std([a.get('solution_rank') for a in rs])
      ref = paper.get(t)
      rows.append(
        [
          model,
          ctx.setting(request.paper).name + (f'-{request.variant}' if request.variant else ''),
          f'{t:g}',
          len(rs),
          pct(mean_std([a.get('test_accuracy') for a in rs])[0]),
          pct(mean_std([metric(a, 'kappa') for a in rs])[0]),
          pct(mean_std([metric(a, 'rho') for a in rs])[0]),
          f'{sr[0]:.1f} (max {rs[0].get("solution_rank_bound")})',
          *([f'{ref[0]}%', f'{ref[1]}%', ref[2]] if ref else ['-', '-', '-']),
        ]
      )
  if not rows:
    raise MissingRuns(f'no analysed run for {ctx.entry.key}')
  ctx.save_table(
    header,
    rows,
    what + ' kappa / rho: default probe convention of the '
    'analysis; SR: numerical rank of the test-set logits (max: the bound from '
    'the penultimate width and the class count).',
    lines,
  )


def _t(paper: str, temps, variant='', overrides=(), cpu=None):
  return Request(paper, tuple(temps), variant=variant, overrides=overrides, cpu_temperatures=cpu)


_GRID = (1.0, 10.0, 100.0, 1000.0)
_VGG_GRID = (1.0, 10.0, 50.0, 100.0)
_C100_GRID = (1.0, 10.0, 100.0, 200.0)
_T3 = (
  ('VGG19 (CIFAR-10)', _t('cifar10/vgg19', (1.0, _LOW)), {1.0: (47, 64, 9), _LOW: (53, 64, 9)}),
  ('VGG19 (CIFAR-100)', _t('cifar100/vgg19', (1.0, _LOW)), {1.0: (58, 58, 73), _LOW: (58, 53, 45)}),
)
_T6 = (
  (
    'ResNet34 (CIFAR-100), MSE loss',
    _t('cifar100/resnet34', (1.0, _LOW), 'mse', (('loss', 'mse'),)),
    {1.0: (100, 10, 99), _LOW: (90, 20, 95)},
  ),
)
_T7 = (
  (
    'ResNet18',
    _t('cifar10/resnet18', _GRID),
    {1.0: (100, 8, 9), 10.0: (88, 42, 9), 100.0: (81, 49, 9), 1000.0: (81, 52, 9)},
  ),
  (
    'ResNet20',
    _t('cifar10/resnet20', _GRID),
    {1.0: (100, 10, 9), 10.0: (94, 24, 9), 100.0: (83, 34, 9)},
  ),
  (
    'VGG19',
    _t('cifar10/vgg19', _VGG_GRID, cpu=(1.0, 100.0)),
    {1.0: (53, 64, 9), 10.0: (59, 65, 9), 50.0: (59, 66, 9), 100.0: (59, 63, 9)},
  ),
)
_T8 = (
  (
    'ResNet18',
    _t('cifar100/resnet18', _C100_GRID),
    {1.0: (100, 10, 99), 10.0: (94, 30, 99), 100.0: (88, 48, 94), 200.0: (81, 43, 57)},
  ),
  (
    'ResNet34',
    _t('cifar100/resnet34', _C100_GRID),
    {1.0: (100, 12, 99), 10.0: (91, 37, 99), 100.0: (72, 49, 90), 200.0: (72, 50, 61)},
  ),
  (
    'VGG19',
    _t('cifar100/vgg19', _VGG_GRID, cpu=(1.0, 100.0)),
    {1.0: (53, 69, 74), 10.0: (53, 62, 55), 50.0: (53, 68, 46), 100.0: (53, 69, 45)},
  ),
)
_T9 = (
  (
    'ResNet34',
    _t('imagenet1k/resnet34', _GRID),
    {1.0: (100, 5, 512), 10.0: (94, 2, 462), 100.0: (94, 11, 262), 1000.0: (82, 23, 122)},
  ),
  (
    'ResNet50',
    _t('imagenet1k/resnet50', _GRID),
    {1.0: (100, 5, 947), 10.0: (100, 2, 509), 100.0: (90, 14, 249), 1000.0: (78, 22, 128)},
  ),
)


def _sweep_entry(n: int, title: str, spec, what: str, note: str = '') -> Entry:
  return Entry(
    f'table_{n}',
    title,
    tuple(r for _, r, _ in spec),
    functools.partial(render_sweep_table, rows_spec=spec, what=what),
    note,
  )


ENTRIES = [
  Entry(
    'table_1', 'kappa / rho / SR, baseline (T=1) vs low logit norm (T=100)', _T1, render_table1
  ),
  _sweep_entry(
    3,
    'VGG-19: baseline vs low logit norm',
    _T3,
    'VGG-19 at T=1 vs T=100 (the paper does not give its "low logit norm" T).',
    'CPU: VGG-19 trained 2 epochs on 3,000 images only.',
  ),
  _sweep_entry(
    6,
    'MSE loss instead of cross-entropy',
    _T6,
    'MSE between softmax(logits / T) and one-hot targets, T=1 vs T=100 (the '
    'paper does not give its temperature).',
  ),
  _sweep_entry(7, 'Fine-grained temperatures, CIFAR-10', _T7, 'CIFAR-10 temperature sweep.'),
  _sweep_entry(8, 'Fine-grained temperatures, CIFAR-100', _T8, 'CIFAR-100 temperature sweep.'),
  _sweep_entry(9, 'Fine-grained temperatures, ImageNet-1k', _T9, 'ImageNet-1k temperature sweep.'),
]
