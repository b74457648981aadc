"""Figures 2, 5, 18-20: logits norm and pre-/post-softmax rank over training.

Drawn from the train-time monitor (`monitor/metrics.jsonl`: a fixed batch of
`metrics_batch_size` test images, evaluated every `metrics_every_steps`).
"""
from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context, Entry, pyplot
from experiments.figures.runs import Request

_PANELS = {
    'logits_norm_per_sample': 'logits norm (mean per-sample L2)',
    'rank/pre_softmax': 'pre-softmax rank',
    'rank/post_softmax': 'post-softmax rank (at T)',
}


def _series(runs, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Steps and seed mean/std of a monitor scalar (seeds truncated to common steps)."""
  n = min(len(r.monitor.steps) for r in runs)
  values = np.stack([r.monitor.scalar(name)[:n] for r in runs])
  std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(n)
  return runs[0].monitor.steps[:n], values.mean(axis=0), std


def render_dynamics(ctx: Context, request: Request, panels: tuple[str, ...]) -> None:
  plt = pyplot()
  runs = ctx.runs(request)
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
  finals = []
  for t in sorted(runs):
    rs = [r for r in runs[t] if len(r.monitor.steps)]
    if not rs:
      continue
    for ax, name in zip(axes[0], panels):
      steps, mean, std = _series(rs, name)
      line, = ax.plot(steps, mean, label=f'T = {t:g}')
      ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=.2)
    finals.append(f'T={t:g}: ' + ', '.join(
        f'{_PANELS[p].split(" (")[0]} {_series(rs, p)[1][0]:.3g} -> {_series(rs, p)[1][-1]:.3g}'
        for p in panels))
  for ax, name in zip(axes[0], panels):
    ax.set_xlabel('training step')
    ax.set_title(_PANELS[name], fontsize=9)
    ax.grid(alpha=.3)
    if name == 'logits_norm_per_sample':
      ax.set_yscale('log')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
      fig, 'Monitor values over training on a fixed batch of test images, mean (band: '
      '+- std) over seeds; post-softmax rank at the run\'s temperature. First -> last '
      'record: ' + '; '.join(finals) + '.', [ctx.describe(request, runs)])


def _entry(n: int, paper: str, title: str, panels, temps=(1.0, 10.0, 100.0),
           note: str = '') -> Entry:
  cpu = (1.0, 100.0) if 'vgg' in paper else None  # VGG: 2 runs fit 30 CPU minutes
  request = Request(paper, temps, analyze=False, cpu_temperatures=cpu)
  return Entry(f'figure_{n}', title, (request,),
               functools.partial(render_dynamics, request=request, panels=panels), note)


_ALL = tuple(_PANELS)
_VGG_NOTE = ('VGG-19 on CPU: 2 epochs on 3,000 Tiny-ImageNet images, T = 1 and 100 only '
             '(early training).')

ENTRIES = [
    _entry(2, 'cifar100/resnet34', 'Logits norm over training for several temperatures',
           ('logits_norm_per_sample',)),
    _entry(5, 'cifar100/resnet34', 'Pre-/post-softmax rank and logits norm over training',
           _ALL),
    _entry(18, 'cifar100/resnet18', 'Logits norm, pre-/post-softmax rank (ResNet-18, C100)',
           _ALL),
    _entry(19, 'cifar100/resnet34', 'Logits norm, pre-/post-softmax rank (ResNet-34, C100)',
           _ALL),
    _entry(20, 'cifar100/vgg19', 'Logits norm, pre-/post-softmax rank (VGG-19, C100)', _ALL,
           temps=(1.0, 10.0, 100.0), note=_VGG_NOTE),
]
