"""Figures 8 and 17: the logits norm at initialisation and what it decides (App. E).

The initial logits norm is `init/logits_norm` of `train_results.json` (mean per-sample L2
norm on the first test batch, before any step); the final rank is the monitor's last
`rank/rep/<penultimate>` (fixed monitor batch). Figure 17's middle panel trains every
scheme at T = n0 / F17_TARGET_NORM (`config.target_logits_norm`), the T it chose is
`init/temperature`.
"""

from __future__ import annotations

import numpy as np

from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import MissingRuns
from experiments.figures.render import pyplot
from experiments.figures.runs import Request

_INIT_MODELS = ('init/mlp', 'init/resnet18', 'init/resnet34', 'init/resnet50', 'init/vgg19')
_F8 = tuple(Request(p, (1.0,), analyze=False, seeds=2) for p in _INIT_MODELS)
_F8_VGG = Request('cifar10/vgg19', (1.0,))

_SCHEMES = (
  ('kaiming', (('model.init', 'kaiming'),)),
  ('pytorch', (('model.init', 'pytorch'),)),
  ('normal0.05', (('model.init', 'normal'), ('model.init_sigma', 0.05))),
  ('normal0.01', (('model.init', 'normal'), ('model.init_sigma', 0.01))),
)
_F17 = tuple(
  Request(
    'app_e/mlp',
    (1.0,),
    variant=name + ('_ln' if ln else ''),
    overrides=o + (('model.layer_norm', ln),),
    analyze=False,
  )
  for ln in (False, True)
  for name, o in _SCHEMES
)


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
    ax.scatter(np.full(len(norms), i) + np.linspace(-0.1, 0.1, len(norms)), norms)
    lines.append(ctx.describe(request, {1.0: runs}))
    text.append(f'{ctx.setting(request.paper).name}: ' + ', '.join(f'{v:.3g}' for v in norms))
  if not lines:
    raise MissingRuns('no initialisation run')
  ax.set_xticks(range(len(_F8)), [p.split('/')[1] for p in _INIT_MODELS])
  ax.set_yscale('log')
  ax.set_ylabel('initial logits norm (mean per-sample L2)')
  ax.grid(alpha=0.3)
  try:
    vgg = ctx.runs(_F8_VGG)[1.0][0].analysis
    text.append(
      f'trained VGG-19 stand-in at T=1: SR {vgg["solution_rank"]} of {vgg["num_classes"]} classes'
    )
    lines.append(ctx.describe(_F8_VGG))
  except MissingRuns:
    pass
  fig.tight_layout()
  ctx.save_figure(
    fig,
    'Logits norm of randomly initialised networks on CIFAR-10 test images, '
    'one point per initialisation seed. ' + '; '.join(text) + '.',
    lines,
  )


# Figure 17 middle: every scheme trained at T = n0 / target (config.target_logits_norm), so
# all start at the same effective logits norm. The run folder's nominal T1 is ignored.
F17_TARGET_NORM = 1.0
_F17_CALIBRATED = tuple(
  Request(
    'app_e/mlp',
    (1.0,),
    variant=f'{name}_norm{F17_TARGET_NORM:g}',
    overrides=o + (('model.layer_norm', False), ('target_logits_norm', F17_TARGET_NORM)),
    analyze=False,
  )
  for name, o in _SCHEMES
)
_F17_PANELS = (
  'without LayerNorm, T = 1',
  f'T calibrated: n0 / T = {F17_TARGET_NORM:g}',
  'with LayerNorm, T = 1',
)


def _panel(request: Request) -> int:
  if request.variant.endswith('_ln'):
    return 2
  return 1 if 'target_logits_norm' in dict(request.overrides) else 0


def _scheme(request: Request) -> str:
  return request.variant.split('_')[0]


def final_penultimate_rank(run) -> float:
  """The monitor's last rank of the last hidden representation."""
  mon = run.monitor
  return float(mon.scalar(mon.ordered('rank/rep/')[-1])[-1])


def _trained_temperature(run) -> float:
  return float(run.train_results.get('init/temperature', run.config.get('temperature', 1.0)))


def _draw_runs(ax, request: Request, runs, color, calibrated: bool) -> list[tuple[float, str]]:
  """Scatters and labels each run at (n0, final rank); returns (rank, caption phrase) per run."""
  scheme, out = _scheme(request), []
  for run in runs:
    rank, norm = final_penultimate_rank(run), run.train_results['init/logits_norm']
    t = _trained_temperature(run)
    ax.scatter([norm], [rank], color=color)
    ax.annotate(scheme + (f' (T={t:.2g})' if calibrated else ''), (norm, rank), fontsize=7)
    temperature = f', T {t:.3g}' if calibrated else ''
    out.append((rank, f'{scheme}: init norm {norm:.3g}{temperature}, final rank {rank:.0f}'))
  return out


def _by_trained_temperature(runs) -> dict:
  """`runs` grouped by the temperature they trained at (rounded to 6 decimals)."""
  by_t = {}
  for run in runs:
    by_t.setdefault(round(_trained_temperature(run), 6), []).append(run)
  return by_t


def _label_app_e_axes(axes) -> None:
  """Log n0 x axes, panel titles, grids and the shared y label of Figure 17's three panels."""
  for ax, title in zip(axes, _F17_PANELS):
    ax.set_xscale('log')
    ax.set_xlabel('initial logits norm n0')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('final rank of the penultimate layer')


def _app_e_caption(ranks: list[list[float]], text: list[list[str]]) -> str:
  """Figure 17's caption from each panel's final ranks and per-run phrases (left to right)."""
  spread = '; '.join(
    f'{name}: final ranks {min(r):.0f}-{max(r):.0f}'
    for name, r in zip(('left', 'middle', 'right'), ranks)
    if r
  )
  left, middle, right = ('; '.join(phrases) for phrases in text)
  return (
    'Initialisation scheme -> logits norm at initialisation n0 (x) -> rank of the '
    'penultimate representation after training (y, monitor batch). Left (paper: top): '
    'T = 1. Middle (paper: middle): every scheme trained at T = n0 / '
    f'{F17_TARGET_NORM:g} (`target_logits_norm`, T chosen at step 0), so all start at the '
    f'same effective norm n0 / T = {F17_TARGET_NORM:g}. Right (paper: bottom): T = 1 with '
    f'LayerNorm after every hidden layer. {spread}. Left: {left}. Middle: {middle}. '
    f'Right: {right}.'
  )


def render_app_e(ctx: Context) -> None:
  """Figure 17: initial logits norm vs final penultimate rank; top, middle (calibrated T),
  bottom (LayerNorm) of the paper drawn left to right."""
  plt = pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
  lines, text, missing = [], [[], [], []], []
  ranks: list[list[float]] = [[], [], []]
  colors = dict(
    zip([name for name, _ in _SCHEMES], plt.rcParams['axes.prop_cycle'].by_key()['color'])
  )
  for request in _F17 + _F17_CALIBRATED:
    try:
      runs = ctx.runs(request)[1.0]
    except MissingRuns:
      missing.append(request.variant)
      continue
    panel = _panel(request)
    color = colors[_scheme(request)]
    for rank, phrase in _draw_runs(axes[panel], request, runs, color, calibrated=panel == 1):
      ranks[panel].append(rank)
      text[panel].append(phrase)
    lines.append(ctx.describe(request, _by_trained_temperature(runs)))
  if not lines:
    raise MissingRuns('no App. E run')
  _label_app_e_axes(axes)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    _app_e_caption(ranks, text),
    lines,
    ('Not finished (diverged or not trained): ' + ', '.join(missing) + '.') if missing else '',
  )


ENTRIES = [
  # _F8_VGG is drawn when it exists (Figures 9/15 train it), not trained for Figure 8.
  Entry(
    'figure_8',
    'Logits norm at initialisation across models',
    _F8,
    render_init_norms,
    'CPU: every model with the CIFAR stem at 32x32 on CIFAR-10 JPEG test images, 2 '
    'seeds each (about 30 min, mostly the final full-test evaluation of the 1-step '
    'runs).',
  ),
  Entry(
    'figure_17',
    'Initialisation, initial logits norm, rank; LayerNorm (App. E)',
    _F17 + _F17_CALIBRATED,
    render_app_e,
    'CPU: the calibrated normal(0.01) scheme trains at T ~ 1e-6 (its n0 is ~1e-6 on '
    'the 8x512 stand-in): the 1 / T gradient scale makes it the likeliest to diverge.',
  ),
]
