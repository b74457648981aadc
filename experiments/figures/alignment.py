"""Figures 3, 4, 10, 24, 25: weight/representation alignment and gradient ranks.

From the monitor: `alignment_max/<layer>` (max |cosine| between the top-15 right singular
vectors of the layer's kernel and the top-15 of its input), `sv/rep/<name>` (top singular
values), `rank/rep/<name>` and `rank/grad/<layer>` (ranks on the fixed monitor batch).
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import pyplot
from experiments.figures.runs import Request


def alignment_grid(run) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(layers, steps, [layers, steps] max alignment) of one run."""
  names = run.monitor.ordered('alignment_max/')
  grid = np.stack([run.monitor.scalar(n) for n in names]) if names else np.zeros((0, 0))
  return [n.split('/', 1)[1] for n in names], run.monitor.steps, grid


def _first(runs, t):
  return next(r for r in runs[t] if len(r.monitor.steps))


def render_alignment_curves(ctx: Context, request: Request) -> None:
  """Figure 3: mean over layers of the max alignment over training (top) and the
  normalised top singular values of the last representation at the end (bottom)."""
  plt = pyplot()
  runs = ctx.runs(request)
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6))
  finals = []
  for t in sorted(runs):
    run = _first(runs, t)
    mean = run.monitor.scalar('alignment_max_mean')
    top.plot(run.monitor.steps, mean, 'o-', ms=3, label=f'T = {t:g}')
    last = run.monitor.ordered('sv/rep/')[-1]
    sv = run.monitor.vector(last)[-1]
    bottom.semilogy(np.arange(1, len(sv) + 1), sv / sv[0], 'o-', ms=3, label=f'T = {t:g}')
    finals.append(
      f'T={t:g}: mean max alignment {mean[0]:.2f} -> {np.nanmax(mean):.2f} '
      f'(max), sigma_2/sigma_1 of {last[7:]} {sv[1] / sv[0]:.2f}'
    )
  top.set_xlabel('training step')
  top.set_ylabel('mean over layers of max alignment')
  bottom.set_xlabel('singular value index')
  bottom.set_ylabel('sigma_i / sigma_1 (last layer, end)')
  for ax in (top, bottom):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    'Top: mean over Dense/Conv layers of the maximum |cosine| between the '
    'top-15 singular vectors of each kernel and of its input, over training. '
    'Bottom: top-15 singular values of the last hidden representation at the '
    'end of training, divided by the largest. Seed 0. ' + '; '.join(finals) + '.',
    [ctx.describe(request, runs)],
  )


def render_heatmaps(ctx: Context, request: Request) -> None:
  """Figures 10, 24, 25: layers x monitor steps heatmap of the max alignment, per T."""
  plt = pyplot()
  runs = ctx.runs(request)
  temps = sorted(runs)
  fig, axes = plt.subplots(1, len(temps), figsize=(4.5 * len(temps), 3.6), squeeze=False)
  finals = []
  for ax, t in zip(axes[0], temps):
    layers, steps, grid = alignment_grid(_first(runs, t))
    im = ax.imshow(grid.T, aspect='auto', origin='lower', vmin=0, vmax=1, cmap='viridis')
    ax.set_xticks(range(len(layers)), layers, rotation=70, fontsize=6)
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(6, len(steps))).astype(int))
    ax.set_yticks(ticks, [str(steps[i]) for i in ticks], fontsize=7)
    ax.set_xlabel('layer')
    ax.set_ylabel('training step')
    ax.set_title(f'T = {t:g}', fontsize=9)
    finals.append(
      f'T={t:g}: final max alignment per layer ' + ', '.join(f'{v:.2f}' for v in grid[:, -1])
    )
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label='max |cosine|')
  ctx.save_figure(
    fig,
    "Maximum |cosine| between the top-15 singular vectors of each layer's "
    'kernel and of its input (columns: layers in forward order; rows: monitor '
    'steps), seed 0. ' + '; '.join(finals) + '.',
    [ctx.describe(request, runs)],
  )


def render_gradient_ranks(ctx: Context, request: Request) -> None:
  """Figure 4: rank of each representation A^i next to the rank of dL/dW^{i+1}, at the end."""
  plt = pyplot()
  runs = ctx.runs(request)
  temps = sorted(runs)
  fig, axes = plt.subplots(
    1, len(temps), figsize=(4.5 * len(temps), 3.4), squeeze=False, sharey=True
  )
  finals = []
  for ax, t in zip(axes[0], temps):
    mon = _first(runs, t).monitor
    reps = mon.ordered('rank/rep/')
    grads = mon.ordered('rank/grad/')[1 : len(reps) + 1]  # G^{i+1}: the layer consuming A^i
    rep_rank = [mon.scalar(n)[-1] for n in reps]
    grad_rank = [mon.scalar(n)[-1] for n in grads]
    x = np.arange(1, len(reps) + 1)
    ax.plot(x, rep_rank, 'o-', label='rank A^i (representation)')
    ax.plot(x[: len(grad_rank)], grad_rank, 's--', label='rank G^{i+1} (gradient)')
    ax.set_xlabel('layer i')
    ax.set_title(f'T = {t:g}', fontsize=9)
    ax.grid(alpha=0.3)
    finals.append(
      f'T={t:g}: rank A^i '
      + ', '.join(f'{v:.0f}' for v in rep_rank)
      + '; rank G^{i+1} '
      + ', '.join(f'{v:.0f}' for v in grad_rank)
    )
  axes[0][0].set_ylabel('numerical rank (monitor batch)')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    'Numerical rank of each hidden representation A^i and of the gradient '
    "of the next layer's kernel G^{i+1} = dL/dW^{i+1} on the monitor batch at "
    'the last monitor step, seed 0. ' + '; '.join(finals) + '.',
    [ctx.describe(request, runs)],
  )


def _entry(n, title, render, paper, temps, note=''):
  request = Request(paper, temps, analyze=False)
  return Entry(f'figure_{n}', title, (request,), functools.partial(render, request=request), note)


ENTRIES = [
  _entry(
    3,
    'Alignment over training and top singular values',
    render_alignment_curves,
    'cifar10/mlp',
    (1.0, 100.0),
  ),
  _entry(
    4,
    'Rank of activations vs rank of gradients per layer',
    render_gradient_ranks,
    'cifar10/mlp',
    (1.0, 100.0),
  ),
  _entry(
    10, 'Alignment per layer over training (heatmaps)', render_heatmaps, 'cifar10/mlp', (1.0, 100.0)
  ),
  _entry(
    24,
    'Alignment per layer over training, high temperature',
    render_heatmaps,
    'cifar100/resnet18',
    (100.0,),
  ),
  _entry(
    25, 'Alignment per layer over training, T = 1', render_heatmaps, 'cifar100/resnet18', (1.0,)
  ),
]
