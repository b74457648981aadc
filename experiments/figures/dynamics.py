"""Figures 2, 5, 18-20: logits norm and pre-/post-softmax rank over training.

Drawn from the train-time monitor (`monitor/metrics.jsonl`: a fixed batch of
`metrics_batch_size` test images, evaluated every `metrics_every_steps`). Three views of the
same series: one panel per quantity against the training step (`render_dynamics`), one panel
per temperature with the ranks and the norm together (`render_by_temperature`), and the
ranks against the logits norm (`render_rank_vs_norm`). Where two figures read the same runs
(Figures 5, 18 and 19 on the `cpu` preset), each draws another view (`render.SameRuns`).
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import SameRuns
from experiments.figures.render import pyplot
from experiments.figures.runs import Request

_NORM = 'logits_norm_per_sample'
_RANKS = ('rank/pre_softmax', 'rank/post_softmax')
_PANELS = {
  _NORM: 'logits norm (mean per-sample L2)',
  'rank/pre_softmax': 'pre-softmax rank',
  'rank/post_softmax': 'post-softmax rank (at T)',
}
_ALL = tuple(_PANELS)
_WHAT = (
  'Monitor values over training on a fixed batch of test images, mean (band: '
  "+- std) over seeds; post-softmax rank at the run's temperature. "
)


def _series(runs, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Steps and seed mean/std of a monitor scalar (seeds truncated to common steps)."""
  n = min(len(r.monitor.steps) for r in runs)
  values = np.stack([r.monitor.scalar(name)[:n] for r in runs])
  std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(n)
  return runs[0].monitor.steps[:n], values.mean(axis=0), std


def _monitored(runs) -> dict[float, list]:
  """{T: runs with monitor records}, temperatures without any left out."""
  out = {t: [r for r in rs if len(r.monitor.steps)] for t, rs in sorted(runs.items())}
  return {t: rs for t, rs in out.items() if rs}


def _first_last(runs, panels) -> str:
  """'First -> last record: T=1: logits norm a -> b, ...' over the seed means."""
  finals = []
  for t, rs in _monitored(runs).items():
    finals.append(
      f'T={t:g}: '
      + ', '.join(
        f'{_PANELS[p].split(" (")[0]} {_series(rs, p)[1][0]:.3g} -> {_series(rs, p)[1][-1]:.3g}'
        for p in panels
      )
    )
  return 'First -> last record: ' + '; '.join(finals) + '.'


def _opening(ctx: Context, request: Request, same: SameRuns | None) -> str:
  return same.sentence(ctx, request) if same else ''


def render_dynamics(
  ctx: Context, request: Request, panels: tuple[str, ...], same: SameRuns | None = None
) -> None:
  """One panel per quantity against the training step, one line per temperature."""
  plt = pyplot()
  runs = ctx.runs(request)
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
  for t, rs in _monitored(runs).items():
    for ax, name in zip(axes[0], panels):
      steps, mean, std = _series(rs, name)
      (line,) = ax.plot(steps, mean, label=f'T = {t:g}')
      ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  for ax, name in zip(axes[0], panels):
    ax.set_xlabel('training step')
    ax.set_title(_PANELS[name], fontsize=9)
    ax.grid(alpha=0.3)
    if name == _NORM:
      ax.set_yscale('log')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    _opening(ctx, request, same) + _WHAT + _first_last(runs, panels),
    [ctx.describe(request, runs)],
  )


def render_by_temperature(ctx: Context, request: Request, same: SameRuns | None = None) -> None:
  """One panel per temperature: pre-/post-softmax rank (left axis) and logits norm (right)."""
  plt = pyplot()
  runs = ctx.runs(request)
  series = _monitored(runs)
  fig, axes = plt.subplots(
    1, max(len(series), 1), figsize=(4.2 * max(len(series), 1), 3.3), squeeze=False
  )
  for ax, (t, rs) in zip(axes[0], series.items()):
    for name, style in zip(_RANKS, ('-', '--')):
      steps, mean, std = _series(rs, name)
      (line,) = ax.plot(steps, mean, style, label=_PANELS[name].split(' (')[0])
      ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    right = ax.twinx()
    steps, mean, _ = _series(rs, _NORM)
    right.semilogy(steps, mean, 'k:', label='logits norm (right axis)')
    right.set_ylabel('logits norm', fontsize=8)
    ax.set_xlabel('training step')
    ax.set_title(f'T = {t:g}', fontsize=9)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('rank (monitor batch)')
  handles = axes[0][0].get_legend_handles_labels()
  axes[0][0].legend(*handles, fontsize=7, loc='lower right')
  fig.tight_layout()
  ctx.save_figure(
    fig,
    _opening(ctx, request, same) + 'One panel per temperature: pre- and post-softmax '
    'rank (left axis) and logits norm (dotted, right axis, log scale) over training on a '
    'fixed batch of test images, mean (band: +- std) over seeds; post-softmax rank at the '
    "run's temperature. " + _first_last(runs, _ALL),
    [ctx.describe(request, runs)],
  )


def render_rank_vs_norm(ctx: Context, request: Request, same: SameRuns | None = None) -> None:
  """Pre- and post-softmax rank against the logits norm along training, per temperature."""
  plt = pyplot()
  runs = ctx.runs(request)
  fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.3), sharey=True)
  for t, rs in _monitored(runs).items():
    _, norm, _ = _series(rs, _NORM)
    for ax, name in zip(axes, _RANKS):
      _, rank, _ = _series(rs, name)
      (line,) = ax.plot(norm, rank, '-', label=f'T = {t:g}')
      ax.plot(norm[-1:], rank[-1:], 'o', color=line.get_color())  # end of training
  for ax, name in zip(axes, _RANKS):
    ax.set_xscale('log')
    ax.set_xlabel(_PANELS[_NORM])
    ax.set_title(_PANELS[name] + ' vs logits norm', fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('rank (monitor batch)')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    _opening(ctx, request, same) + 'Pre- and post-softmax rank against the logits norm '
    'along training (one curve per temperature, the dot at the end of training), on a '
    "fixed batch of test images, seed means; post-softmax rank at the run's temperature. "
    + _first_last(runs, _ALL),
    [ctx.describe(request, runs)],
  )


def _request(paper: str, temps=(1.0, 10.0, 100.0)) -> Request:
  cpu = (1.0, 100.0) if 'vgg' in paper else None  # VGG: 2 runs fit 30 CPU minutes
  return Request(paper, temps, analyze=False, cpu_temperatures=cpu)


def _entry(
  n: int, paper: str, title: str, render=render_dynamics, note: str = '', **kwargs
) -> Entry:
  request = _request(paper)
  return Entry(
    f'figure_{n}', title, (request,), functools.partial(render, request=request, **kwargs), note
  )


_VGG_NOTE = (
  'VGG-19 on CPU: 2 epochs on 3,000 Tiny-ImageNet images, T = 1 and 100 only (early training).'
)
_F5 = _request('cifar100/resnet34')
_SAME_5_18 = SameRuns(
  5,
  _F5,
  (
    "the paper's Figure 18 is ResNet-18 on CIFAR-100 (Figure 5: ResNet-34), which has one "
    'stand-in here. So this view plots what the figure argues, that the post-softmax rank '
    'follows the logits norm and not the pre-softmax rank: both ranks against the norm; '
    'Figure 5 plots each quantity against the training step.'
  ),
)
_SAME_5_19 = SameRuns(
  5,
  _F5,
  (
    "the paper's Figure 19 is the appendix version of Figure 5 (ResNet-34 on CIFAR-100 in "
    'both), in four panels. So this view draws one panel per temperature with both ranks and '
    'the logits norm together; Figure 5 draws one panel per quantity.'
  ),
)

ENTRIES = [
  _entry(
    2, 'cifar100/resnet34', 'Logits norm over training for several temperatures', panels=(_NORM,)
  ),
  _entry(
    5, 'cifar100/resnet34', 'Pre-/post-softmax rank and logits norm over training', panels=_ALL
  ),
  _entry(
    18,
    'cifar100/resnet18',
    'Logits norm, pre-/post-softmax rank (ResNet-18, C100)',
    render=render_rank_vs_norm,
    same=_SAME_5_18,
  ),
  _entry(
    19,
    'cifar100/resnet34',
    'Logits norm, pre-/post-softmax rank (ResNet-34, C100)',
    render=render_by_temperature,
    same=_SAME_5_19,
  ),
  _entry(
    20,
    'cifar100/vgg19',
    'Logits norm, pre-/post-softmax rank (VGG-19, C100)',
    panels=_ALL,
    note=_VGG_NOTE,
  ),
]
