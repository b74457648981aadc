"""Figures 1, 9, 11-16: ID and OOD linear-probe accuracy per layer, T=1 vs high T.

Three views of the same probes: one panel per temperature (`render_probes`); every
temperature overlaid in one panel per probe set (`render_probe_overlay`); and that overlay
relative to the layers kappa and rho are read against (`relative=True`). Figures 13 and 14
differ from Figures 11 and 12 in the paper only by the model, which the `cpu` preset does not
train, so there they read the same runs and draw them in another view (`render.SameRuns`).
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context
from experiments.figures.render import Entry
from experiments.figures.render import SameRuns
from experiments.figures.render import mean_std
from experiments.figures.render import pct
from experiments.figures.render import pyplot
from experiments.figures.runs import Request
from experiments.figures.runs import hidden_layers
from experiments.figures.runs import metric

KAPPA_THRESHOLD = 0.99  # kappa: the first layer at >= 99% of the last layer's ID accuracy


def probe_curves(runs, key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Layers (forward order) and seed mean/std of `runs`' `key` probe accuracies."""
  layers = list(runs[0].analysis.get(key) or {})
  acc = np.asarray([[r.analysis[key].get(l, np.nan) for l in layers] for r in runs])
  std = acc.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(layers))
  return layers, acc.mean(axis=0), std


def convention_layers(analysis: dict, key: str) -> list[str]:
  """The layers kappa / rho are taken over in `analysis`'s probe convention (forward order)."""
  from rankdeficit.analysis import probe_layers  # pylint: disable=import-outside-toplevel

  accuracy = analysis.get(key) or {}
  convention = analysis.get('probe_convention') or probe_layers.DEFAULT_CONVENTION
  layers = probe_layers.layers_for(convention, hidden_layers(accuracy))
  return [l for l in layers if l in accuracy]


def _summary(rs, t: float) -> str:
  kappa = mean_std([metric(r.analysis, 'kappa') for r in rs])
  rho = mean_std([metric(r.analysis, 'rho') for r in rs])
  acc = mean_std([r.analysis.get('test_accuracy') for r in rs])
  return f'T={t:g}: kappa {pct(kappa[0])}, rho {pct(rho[0])}, test acc {pct(acc[0])}'


def _opening(ctx: Context, request: Request, same: SameRuns | None) -> str:
  return same.sentence(ctx, request) if same else ''


def render_probes(ctx: Context, request: Request, same: SameRuns | None = None) -> None:
  """One panel per temperature: ID/OOD probe accuracy per layer with kappa and rho."""
  plt = pyplot()
  runs = ctx.runs(request)
  temps = sorted(runs)
  fig, axes = plt.subplots(
    1, len(temps), figsize=(4.2 * len(temps), 3.4), squeeze=False, sharey=True
  )
  summary = []
  for ax, t in zip(axes[0], temps):
    rs = runs[t]
    a = rs[0].analysis
    for key, style, name in (
      ('id_probe_accuracy', 'o-', a['dataset']),
      ('ood_probe_accuracy', 's-', a.get('ood_dataset') or 'OOD'),
    ):
      if not a.get(key):
        continue
      layers, mean, std = probe_curves(rs, key)
      x = np.arange(1, len(layers) + 1)
      ax.errorbar(x, mean, yerr=std, fmt=style, ms=3, capsize=2, label=f'{name}')
      ax.set_xticks(x, layers, rotation=70, fontsize=6)
    kappa = mean_std([metric(r.analysis, 'kappa') for r in rs])
    rho = mean_std([metric(r.analysis, 'rho') for r in rs])
    ax.set_title(f'T = {t:g}: kappa {pct(kappa[0])}, rho {pct(rho[0])}', fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    summary.append(_summary(rs, t))
  axes[0][0].set_ylabel('linear probe accuracy')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
    fig,
    _opening(ctx, request, same) + "Accuracy of a linear probe on each layer's "
    'representation (after its non-linearity; the final layer before and after the softmax '
    'when the analysis probes them), ID data and OOD data, mean +- std over seeds. '
    + '; '.join(summary)
    + '.',
    [ctx.describe(request, runs)],
  )


def _probe_sets(analysis: dict) -> list[tuple[str, str]]:
  """The (probe accuracy key, dataset name) pairs `analysis` has: ID, then OOD."""
  return [
    (key, name)
    for key, name in (
      ('id_probe_accuracy', analysis['dataset']),
      ('ood_probe_accuracy', analysis.get('ood_dataset') or 'OOD'),
    )
    if analysis.get(key)
  ]


def overlay_accuracy(runs, key: str, relative: bool) -> tuple[list[str], np.ndarray]:
  """Layers and per-run `key` probe accuracies of one temperature's `runs` (see `relative`).

  `relative`: over the layers of the probe convention, ID accuracies divided by the last
  layer's and OOD accuracies by the best layer's (NaN where that reference is not positive).
  """
  analysis = runs[0].analysis
  layers = convention_layers(analysis, key) if relative else list(analysis.get(key) or {})
  acc = np.asarray([[r.analysis[key].get(l, np.nan) for l in layers] for r in runs])
  if relative:
    ref = acc[:, -1:] if key == 'id_probe_accuracy' else np.nanmax(acc, axis=1, keepdims=True)
    acc = acc / np.where(ref > 0, ref, np.nan)
  return layers, acc


def _draw_overlay_panel(ax, runs: dict, key: str, name: str, relative: bool) -> None:
  """One probe set's panel: a line per temperature (seed mean), labelled axes and legend."""
  for t in sorted(runs):
    layers, acc = overlay_accuracy(runs[t], key, relative)
    x = np.arange(1, len(layers) + 1)
    test = mean_std([r.analysis.get('test_accuracy') for r in runs[t]])[0]
    ax.plot(x, np.nanmean(acc, axis=0), 'o-', ms=3, label=f'T = {t:g} (test acc {pct(test)})')
    ax.set_xticks(x, layers, rotation=70, fontsize=6)
  if relative and key == 'id_probe_accuracy':
    ax.axhline(KAPPA_THRESHOLD, color='k', ls=':', lw=1)
    ax.set_ylabel("ID probe accuracy / last layer's")
  elif relative:
    ax.set_ylabel("OOD probe accuracy / best layer's")
  else:
    ax.set_ylabel('linear probe accuracy')
    ax.set_ylim(0, 1)
  ax.set_title(f'{name} ({"ID" if key == "id_probe_accuracy" else "OOD"} probes)', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


_OVERLAY_CAPTION = (
  "Accuracy of a linear probe on each layer's representation, one panel per probe "
  "set (ID data, OOD data) and one line per temperature (legend: the run's test "
  'accuracy), mean over seeds. '
)
_RELATIVE_OVERLAY_CAPTION = (
  'Per layer of the probe convention (hidden layers + logits under `paper`), the ID '
  "probe accuracy divided by the last layer's (kappa: the first layer at or above "
  'the dotted 99% line, over the number of layers) and the OOD probe accuracy '
  "divided by the best layer's (rho: 1 minus the last point), one line per "
  'temperature, mean over seeds. '
)


def render_probe_overlay(
  ctx: Context, request: Request, relative: bool = False, same: SameRuns | None = None
) -> None:
  """One panel per probe set (ID, OOD), one line per temperature.

  `relative`: the ID accuracies divided by the last layer's of the probe convention (kappa is
  the first layer at or above the dotted 99% line, over the number of layers) and the OOD
  accuracies divided by the best layer's (rho is 1 minus the last point).
  """
  plt = pyplot()
  runs = ctx.runs(request)
  temps = sorted(runs)
  sets = _probe_sets(runs[temps[0]][0].analysis)
  fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 3.6), squeeze=False)
  for ax, (key, name) in zip(axes[0], sets):
    _draw_overlay_panel(ax, runs, key, name, relative)
  summary = [_summary(runs[t], t) for t in temps]
  fig.tight_layout()
  what = _RELATIVE_OVERLAY_CAPTION if relative else _OVERLAY_CAPTION
  ctx.save_figure(
    fig,
    _opening(ctx, request, same) + what + '; '.join(summary) + '.',
    [ctx.describe(request, runs)],
  )


def _request(paper: str, temps) -> Request:
  cpu = temps[:1] + temps[-1:] if 'vgg' in paper else None  # VGG: 2 runs fit 30 CPU minutes
  return Request(paper, temps, cpu_temperatures=cpu)


def _entry(
  n: int, paper: str, title: str, temps=(1.0, 100.0), note: str = '', render=render_probes, **kwargs
) -> Entry:
  request = _request(paper, temps)
  return Entry(
    f'figure_{n}', title, (request,), functools.partial(render, request=request, **kwargs), note
  )


_VGG_NOTE = (
  "VGG-19 on CPU: 2 epochs on 3,000 images, two temperatures; the paper's "
  'point (a baseline VGG starts collapsed, low T helps) needs its trained state, '
  'so read this as the early-training regime only.'
)
_SWEEP = (1.0, 10.0, 100.0)
_F11 = _request('cifar10/resnet18', _SWEEP)
_F12 = _request('cifar100/resnet18', _SWEEP)
_SAME_11 = SameRuns(
  11,
  _F11,
  (
    "the paper's Figures 11 and 13 differ in the model (ResNet-18, ResNet-20), which has "
    'one stand-in here, and Figure 13 shows a failed run at T = 1000 (bottom right; Table 7 '
    'has no ResNet-20 T = 1000 row), drawn here when the stand-in has one. So this view '
    "overlays every temperature in one panel per probe set, each run's test accuracy in the "
    'legend; Figure 11 draws one panel per temperature.'
  ),
)
_SAME_12 = SameRuns(
  12,
  _F12,
  (
    "the paper's Figures 12 and 14 differ only in the model (ResNet-18, ResNet-34 on "
    'CIFAR-100), which has one stand-in here. So this view draws what kappa and rho read '
    'off the same probes, at every temperature of the ResNet-34 sweep (Table 8); Figure 12 '
    'draws the raw accuracies, one panel per temperature.'
  ),
)

ENTRIES = [
  _entry(1, 'cifar100/resnet34', 'Linear probes per layer, baseline vs high temperature'),
  _entry(
    9,
    'cifar10/vgg19',
    'VGG-19 probes: baseline vs low temperature',
    temps=(1.0, 0.1),
    note=_VGG_NOTE + ' "Low temperature" is T = 0.1 here (the paper does not give its value).',
  ),
  _entry(
    11, 'cifar10/resnet18', 'Probes per layer across temperatures (ResNet-18, C10)', temps=_SWEEP
  ),
  _entry(
    12, 'cifar100/resnet18', 'Probes per layer across temperatures (ResNet-18, C100)', temps=_SWEEP
  ),
  _entry(
    13,
    'cifar10/resnet20',
    'Probes per layer across temperatures (ResNet-20, C10)',
    temps=_SWEEP + (1000.0,),
    render=render_probe_overlay,
    same=_SAME_11,
  ),
  _entry(
    14,
    'cifar100/resnet34',
    'Probes per layer across temperatures (ResNet-34, C100)',
    temps=_SWEEP + (200.0,),
    render=render_probe_overlay,
    relative=True,
    same=_SAME_12,
  ),
  _entry(
    15,
    'cifar10/vgg19',
    'Probes per layer across temperatures (VGG-19, C10)',
    temps=_SWEEP,
    note=_VGG_NOTE,
  ),
  _entry(
    16,
    'cifar100/vgg19',
    'Probes per layer across temperatures (VGG-19, C100)',
    temps=_SWEEP,
    note=_VGG_NOTE,
  ),
]
