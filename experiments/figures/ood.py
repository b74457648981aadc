"""Figures 7, 22, 23 and Table 2: OrthoDev, OOD generalization vs detection, NECO."""

from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import MissingRuns
from experiments.figures.render import mean_std
from experiments.figures.render import pyplot
from experiments.figures.runs import Request
from experiments.figures.runs import metric

_SWEEP = (1.0, 10.0, 100.0)

# Paper Table 2 (NECO, %): (ID -> OOD, model) -> (baseline AUROC, FPR95, low-norm AUROC, FPR95)
PAPER_TABLE2 = {
  ('CIFAR-100 -> CIFAR-10', 'ResNet-18'): (63.66, 90.44, 77.04, 80.13),
  ('CIFAR-100 -> CIFAR-10', 'ResNet-34'): (62.36, 91.13, 76.37, 79.27),
  ('CIFAR-100 -> CIFAR-10', 'ViT-B'): (92.38, 40.01, 93.96, 30.92),
  ('CIFAR-10 -> CIFAR-100', 'ResNet-18'): (77.75, 73.29, 87.53, 55.87),
  ('CIFAR-10 -> CIFAR-100', 'ResNet-34'): (73.96, 73.60, 86.18, 57.23),
  ('CIFAR-10 -> CIFAR-100', 'ViT-B'): (98.09, 9.51, 98.33, 8.87),
}
_TABLE2_ROWS = (
  ('CIFAR-100 -> CIFAR-10', 'ResNet-18', 'cifar100/resnet18'),
  ('CIFAR-10 -> CIFAR-100', 'ResNet-18', 'cifar10/resnet18'),
  ('CIFAR-10 -> CIFAR-100', 'ResNet-18', 'cifar10/mlp'),
)


def render_orthodev(ctx: Context, request: Request, per_layer: bool) -> None:
  """Figure 7 (penultimate OrthoDev vs T) or 22 (OrthoDev per layer, one line per T)."""
  plt = pyplot()
  runs = ctx.runs(request)
  fig, ax = plt.subplots(figsize=(5.5, 3.4))
  text = []
  for t in sorted(runs):
    rs = runs[t]
    if per_layer:
      layers = list(rs[0].analysis.get('orthodev_per_layer') or {})
      vals = np.asarray([[r.analysis['orthodev_per_layer'][l] for l in layers] for r in rs])
      ax.plot(np.arange(1, len(layers) + 1), vals.mean(0), 'o-', ms=3, label=f'T = {t:g}')
      ax.set_xticks(np.arange(1, len(layers) + 1), layers, rotation=70, fontsize=6)
      text.append(f'T={t:g}: ' + ', '.join(f'{v:.2f}' for v in vals.mean(0)))
    else:
      m, s = mean_std([r.analysis.get('orthodev') for r in rs])
      ax.errorbar([t], [m], yerr=[s], fmt='o', capsize=3)
      text.append(f'T={t:g}: {m:.3f} +- {s:.3f}')
  if per_layer:
    ax.set_xlabel('layer')
    ax.legend(fontsize=8)
  else:
    ax.set_xscale('log')
    ax.set_xlabel('training temperature T')
  ax.set_ylabel('OrthoDev')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    'OrthoDev (Eq. 4: mean over classes of |cos(mu_c, mu_G^OOD)|, ID test '
    'class means vs OOD test global mean) '
    + ('per layer' if per_layer else 'of the penultimate layer, mean +- std over seeds')
    + '. '
    + '; '.join(text)
    + '.',
    [ctx.describe(request, runs)],
  )


def _points(ctx: Context, request: Request):
  """(runs, [(T, run)] of the runs with both rho and a detection score)."""
  try:
    runs = ctx.runs(request)
  except MissingRuns:
    return {}, []
  return runs, [
    (t, r)
    for t, rs in runs.items()
    for r in rs
    if (r.analysis.get('ood_detection') and metric(r.analysis, 'rho') is not None)
  ]


def render_tradeoff(ctx: Context, requests: tuple[Request, ...]) -> None:
  """Figure 23: OOD generalization loss rho vs NECO AUROC, one point per run."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.8))
  lines, found = [], False
  for request in requests:
    runs, pts = _points(ctx, request)
    if not pts:
      continue
    found = True
    rho = np.asarray([metric(r.analysis, 'rho') for _, r in pts])
    auroc = np.asarray([r.analysis['ood_detection']['auroc'] for _, r in pts])
    sc = ax.scatter(
      rho,
      auroc,
      c=np.log10([t for t, _ in pts]),
      cmap='coolwarm',
      marker='o' if len(lines) == 0 else 's',
      label=ctx.setting(request.paper).name,
    )
    corr = np.corrcoef(rho, auroc)[0, 1] if len(pts) > 2 else float('nan')
    points = '; '.join(
      f'T={t:g} s{r.seed}: rho {pr:.1%}, AUROC {au:.1%}' for (t, r), pr, au in zip(pts, rho, auroc)
    )
    lines.append(
      ctx.describe(request, runs)
      + f' {len(pts)} runs, Pearson r(rho, AUROC) = {corr:.2f} ({points})'
    )
  if not found:
    raise MissingRuns('no analysed run with OOD detection')
  fig.colorbar(sc, label='log10 T')
  ax.set_xlabel('rho (OOD generalization loss; higher = worse OOD generalization)')
  ax.set_ylabel('NECO AUROC (OOD detection)')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    'OOD generalization loss rho against NECO OOD-detection AUROC, one '
    'point per run (colour: temperature). The paper: better OOD generalization '
    '(lower rho) goes with worse detection.',
    lines,
  )


def _pm(stats: tuple[float, float], seeds: int) -> str:
  """'mean +- std' in percent (the std only with several seeds)."""
  return f'{100 * stats[0]:.1f}' + (f' +- {100 * stats[1]:.1f}' if seeds > 1 else '')


def render_table2(ctx: Context, requests: tuple[Request, ...]) -> None:
  header = [
    'paper ID -> OOD',
    'paper model',
    'this run',
    'T',
    'seeds',
    'AUROC %',
    'FPR95 % (NECO conv.)',
    'paper AUROC %',
    'paper FPR95 %',
  ]
  rows, lines = [], []
  for (pair, model, _), request in zip(_TABLE2_ROWS, requests):
    try:
      runs = ctx.runs(request)
    except MissingRuns:
      continue
    lines.append(ctx.describe(request, runs))
    paper = PAPER_TABLE2[(pair, model)]
    for i, t in enumerate(sorted(runs)):
      dets = [r.analysis.get('ood_detection') or {} for r in runs[t]]
      auroc = mean_std([d.get('auroc') for d in dets])
      fpr = mean_std([d.get('fpr95_neco') for d in dets])
      det_set = dets[0].get('ood_dataset', '?')
      rows.append(
        [
          pair,
          model,
          f'{ctx.setting(request.paper).name} -> {det_set}',
          f'{t:g}',
          len(runs[t]),
          _pm(auroc, len(dets)),
          _pm(fpr, len(dets)),
          paper[0 if i == 0 else 2],
          paper[1 if i == 0 else 3],
        ]
      )
  if not rows:
    raise MissingRuns('no analysed run for Table 2')
  ctx.save_table(
    header,
    rows,
    'NECO OOD detection (PCA on ID train penultimate features, '
    'ID test vs OOD test), baseline (T=1) vs low logit norm (high T). FPR@95 in '
    'the NECO convention (ID positive). The paper column holds its baseline '
    'numbers on the T=1 row and its low-logit-norm numbers on the other rows.',
    lines,
  )


_T2 = tuple(Request(p, (1.0, 100.0)) for _, _, p in _TABLE2_ROWS)
# On CPU only the MLP sweep (3 runs, ~25 min); the other settings join when their runs exist.
_F23 = (
  Request('cifar10/mlp', (1.0, 10.0, 100.0, 1000.0), cpu_temperatures=_SWEEP),
  Request('cifar10/resnet20', _SWEEP, cpu_temperatures=()),
  Request('cifar100/resnet34', _SWEEP, cpu_temperatures=()),
)
_F7 = Request('cifar100/resnet34', _SWEEP)

ENTRIES = [
  Entry(
    'figure_7',
    'OrthoDev across temperatures',
    (_F7,),
    functools.partial(render_orthodev, request=_F7, per_layer=False),
  ),
  Entry(
    'figure_22',
    'OrthoDev per layer across temperatures',
    (_F7,),
    functools.partial(render_orthodev, request=_F7, per_layer=True),
  ),
  Entry(
    'figure_23',
    'OOD generalization vs OOD detection',
    _F23,
    functools.partial(render_tradeoff, requests=_F23),
  ),
  Entry(
    'table_2',
    'NECO OOD detection, baseline vs low logit norm',
    _T2,
    functools.partial(render_table2, requests=_T2),
    'CPU: detection sets are MNIST (CIFAR-10 ID) and CIFAR-10 JPEG (Tiny-ImageNet ID) '
    'instead of CIFAR-100 / CIFAR-10; no ViT-B row (no pretrained weights offline).',
  ),
]
