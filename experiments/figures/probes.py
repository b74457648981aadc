"""Figures 1, 9, 11-16: ID and OOD linear-probe accuracy per layer, T=1 vs high T."""
from __future__ import annotations

import functools

import numpy as np

from experiments.figures.render import Context, Entry, mean_std, pct, pyplot
from experiments.figures.runs import Request, metric


def probe_curves(runs, key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Layers (forward order) and seed mean/std of `runs`' `key` probe accuracies."""
  layers = list(runs[0].analysis.get(key) or {})
  acc = np.asarray([[r.analysis[key].get(l, np.nan) for l in layers] for r in runs])
  std = acc.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(layers))
  return layers, acc.mean(axis=0), std


def render_probes(ctx: Context, request: Request) -> None:
  """One panel per temperature: ID/OOD probe accuracy per layer with kappa and rho."""
  plt = pyplot()
  runs = ctx.runs(request)
  temps = sorted(runs)
  fig, axes = plt.subplots(1, len(temps), figsize=(4.2 * len(temps), 3.4), squeeze=False,
                           sharey=True)
  summary = []
  for ax, t in zip(axes[0], temps):
    rs = runs[t]
    a = rs[0].analysis
    for key, style, name in (('id_probe_accuracy', 'o-', a['dataset']),
                             ('ood_probe_accuracy', 's-', a.get('ood_dataset') or 'OOD')):
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
    ax.grid(alpha=.3)
    summary.append(f'T={t:g}: kappa {pct(kappa[0])}, rho {pct(rho[0])}, test acc '
                   f'{pct(mean_std([r.analysis.get("test_accuracy") for r in rs])[0])}')
  axes[0][0].set_ylabel('linear probe accuracy')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(
      fig, 'Accuracy of a linear probe on each layer\'s representation (after its '
      'non-linearity; the final layer before and after the softmax when the analysis '
      'probes them), ID data and OOD data, mean +- std over seeds. '
      + '; '.join(summary) + '.', [ctx.describe(request, runs)])


def _entry(n: int, paper: str, title: str, temps=(1.0, 100.0), note: str = '') -> Entry:
  cpu = temps[:1] + temps[-1:] if 'vgg' in paper else None  # VGG: 2 runs fit 30 CPU minutes
  request = Request(paper, temps, cpu_temperatures=cpu)
  return Entry(f'figure_{n}', title, (request,),
               functools.partial(render_probes, request=request), note)


_VGG_NOTE = ('VGG-19 on CPU: 2 epochs on 3,000 images, two temperatures; the paper\'s '
             'point (a baseline VGG starts collapsed, low T helps) needs its trained state, '
             'so read this as the early-training regime only.')

ENTRIES = [
    _entry(1, 'cifar100/resnet34', 'Linear probes per layer, baseline vs high temperature'),
    _entry(9, 'cifar10/vgg19', 'VGG-19 probes: baseline vs low temperature',
           temps=(1.0, 0.1), note=_VGG_NOTE + ' "Low temperature" is T = 0.1 here (the paper '
           'does not give its value).'),
    _entry(11, 'cifar10/resnet18', 'Probes per layer across temperatures (ResNet-18, C10)',
           temps=(1.0, 10.0, 100.0)),
    _entry(12, 'cifar100/resnet18', 'Probes per layer across temperatures (ResNet-18, C100)',
           temps=(1.0, 10.0, 100.0)),
    _entry(13, 'cifar10/resnet20', 'Probes per layer across temperatures (ResNet-20, C10)',
           temps=(1.0, 10.0, 100.0)),
    _entry(14, 'cifar100/resnet34', 'Probes per layer across temperatures (ResNet-34, C100)',
           temps=(1.0, 10.0, 100.0)),
    _entry(15, 'cifar10/vgg19', 'Probes per layer across temperatures (VGG-19, C10)',
           temps=(1.0, 10.0, 100.0), note=_VGG_NOTE),
    _entry(16, 'cifar100/vgg19', 'Probes per layer across temperatures (VGG-19, C100)',
           temps=(1.0, 10.0, 100.0), note=_VGG_NOTE),
]
