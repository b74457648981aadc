"""Sweep-level plots: kappa, rho, SR and test accuracy against T, with seed error bars.

One `sweep_<setting>` entry per paper setting that a temperature sweep (Tables 7-9) runs.
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import mean_std
from experiments.figures.render import pyplot
from experiments.figures.runs import Request
from experiments.figures.runs import metric

_PANELS = (
  ('kappa', 'kappa (effective depth)', True),
  ('rho', 'rho (OOD generalization loss)', True),
  ('solution_rank', 'SR (solution rank)', False),
  ('test_accuracy', 'test accuracy', True),
)


def _value(analysis: dict, key: str):
  return metric(analysis, key) if key in ('kappa', 'rho') else analysis.get(key)


def render_sweep(ctx: Context, request: Request) -> None:
  plt = pyplot()
  runs = ctx.runs(request)
  temps = sorted(runs)
  fig, axes = plt.subplots(1, len(_PANELS), figsize=(3.3 * len(_PANELS), 3))
  text = []
  for ax, (key, title, is_pct) in zip(axes, _PANELS):
    stats = [mean_std([_value(r.analysis, key) for r in runs[t]]) for t in temps]
    scale = 100 if is_pct else 1
    mean = np.asarray([m for m, _ in stats]) * scale
    std = np.asarray([s for _, s in stats]) * scale
    ax.errorbar(temps, mean, yerr=std, fmt='o-', capsize=3)
    ax.set_xscale('log')
    ax.set_xlabel('T')
    ax.set_title(title + (' %' if is_pct else ''), fontsize=9)
    ax.grid(alpha=0.3)
    text.append(f'{key}: ' + ', '.join(f'T={t:g} {m:.3g}' for t, m in zip(temps, mean)))
  fig.tight_layout()
  ctx.save_figure(
    fig,
    'Effective depth kappa, OOD generalization loss rho, solution rank SR '
    'and test accuracy against the training temperature, mean +- std over '
    'seeds. ' + '; '.join(text) + '.',
    [ctx.describe(request, runs)],
  )


def _entry(paper: str, temps) -> Entry:
  request = Request(paper, temps)
  key = 'sweep_' + paper.replace('/', '_')
  return Entry(
    key,
    f'kappa, rho, SR and accuracy against T ({paper})',
    (request,),
    functools.partial(render_sweep, request=request),
  )


ENTRIES = [
  _entry('cifar10/mlp', (1.0, 10.0, 100.0, 1000.0)),
  _entry('cifar10/resnet20', (1.0, 10.0, 100.0, 1000.0)),
  _entry('cifar100/resnet34', (1.0, 10.0, 100.0, 200.0)),
]
