"""Figures 8 and 17: the logits norm at initialisation and what it decides (App. E).

The initial logits norm is `init/logits_norm` of `train_results.json` (mean per-sample L2
norm on the first test batch, before any step); the final rank is the monitor's last
`rank/rep/<penultimate>` (fixed monitor batch).
"""
from __future__ import annotations

import numpy as np

from experiments.figures.render import Context, Entry, MissingRuns, pyplot
from experiments.figures.runs import Request

_INIT_MODELS = ('init/mlp', 'init/resnet18', 'init/resnet34', 'init/resnet50', 'init/vgg19')
_F8 = tuple(Request(p, (1.0,), analyze=False, seeds=2) for p in _INIT_MODELS)
_F8_VGG = Request('cifar10/vgg19', (1.0,))

_SCHEMES = (('kaiming', (('model.init', 'kaiming'),)),
            ('pytorch', (('model.init', 'pytorch'),)),
            ('normal0.05', (('model.init', 'normal'), ('model.init_sigma', 0.05))),
            ('normal0.01', (('model.init', 'normal'), ('model.init_sigma', 0.01))))
_F17 = tuple(Request('app_e/mlp', (1.0,), variant=name + ('_ln' if ln else ''),
                     overrides=o + (('model.layer_norm', ln),), analyze=False)
             for ln in (False, True) for name, o in _SCHEMES)


def render_init_norms(ctx: Context) -> None:
  """Figure 8: initial logits norm per model (one point per seed) and VGG's SR at T=1."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.4))
  lines, text = [], []
  for i, request in enumerate(_F8):
    try:
      runs = ctx.runs(request)[1.0]
    except MissingRuns:
      continue
    norms = [r.train_results['init/logits_norm'] for r in runs]
    ax.scatter(np.full(len(norms), i) + np.linspace(-.1, .1, len(norms)), norms)
    lines.append(ctx.describe(request, {1.0: runs}))
    text.append(f'{ctx.setting(request.paper).name}: '
                + ', '.join(f'{v:.3g}' for v in norms))
  if not lines:
    raise MissingRuns('no initialisation run')
  ax.set_xticks(range(len(_F8)), [p.split('/')[1] for p in _INIT_MODELS])
  ax.set_yscale('log')
  ax.set_ylabel('initial logits norm (mean per-sample L2)')
  ax.grid(alpha=.3)
  try:
    vgg = ctx.runs(_F8_VGG)[1.0][0].analysis
    text.append(f'trained VGG-19 stand-in at T=1: SR {vgg["solution_rank"]} of '
                f'{vgg["num_classes"]} classes')
    lines.append(ctx.describe(_F8_VGG))
  except MissingRuns:
    pass
  fig.tight_layout()
  ctx.save_figure(fig, 'Logits norm of randomly initialised networks on CIFAR-10 test images, '
                  'one point per initialisation seed. ' + '; '.join(text) + '.', lines)


def render_app_e(ctx: Context) -> None:
  """Figure 17 (top and bottom): initial logits norm vs final penultimate rank."""
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
  lines, text = [], []
  for request in _F17:
    try:
      runs = ctx.runs(request)[1.0]
    except MissingRuns:
      continue
    ax = axes[1 if request.variant.endswith('_ln') else 0]
    for run in runs:
      mon = run.monitor
      rank = mon.scalar(mon.ordered('rank/rep/')[-1])[-1]
      norm = run.train_results['init/logits_norm']
      ax.scatter([norm], [rank])
      ax.annotate(request.variant.replace('_ln', ''), (norm, rank), fontsize=7)
      text.append(f'{request.variant}: init norm {norm:.3g}, final rank {rank:.0f}')
    lines.append(ctx.describe(request, {1.0: runs}))
  if not lines:
    raise MissingRuns('no App. E run')
  for ax, title in zip(axes, ('without LayerNorm', 'with LayerNorm')):
    ax.set_xscale('log')
    ax.set_xlabel('initial logits norm')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=.3)
  axes[0].set_ylabel('final rank of the penultimate layer')
  fig.tight_layout()
  ctx.save_figure(fig, 'Initialisation scheme -> logits norm at initialisation (x) -> rank of '
                  'the penultimate representation after training (y, monitor batch), T = 1; '
                  'left without, right with LayerNorm after every hidden layer. '
                  + '; '.join(text) + '.', lines,
                  'The middle panel of the paper (initial logits norms equalised through the '
                  'temperature, App. A.7) is not drawn: it needs a calibration run per scheme '
                  'first.')


ENTRIES = [
    # _F8_VGG is drawn when it exists (Figures 9/15 train it), not trained for Figure 8.
    Entry('figure_8', 'Logits norm at initialisation across models', _F8,
          render_init_norms,
          'CPU: every model with the CIFAR stem at 32x32 on CIFAR-10 JPEG test images, 2 '
          'seeds each (about 30 min, mostly the final full-test evaluation of the 1-step '
          'runs).'),
    Entry('figure_17', 'Initialisation, initial logits norm, rank; LayerNorm (App. E)', _F17,
          render_app_e),
]
