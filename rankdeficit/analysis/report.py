"""The outputs of an analysis: `analysis.json`, `analysis.md` and the per-run plots
(`write_analysis`, into the run directory's analysis/).

`to_markdown(a)` and `write_plots(a, outdir)` read only the JSON-serialisable dict that
`rankdeficit.analyze.analyze_run` returns (and writes as analysis.json), so they can be
re-run on an old analysis.json without the model or the data.
"""

from __future__ import annotations

import numpy as np

from rankdeficit.analysis import probe_layers
from rankdeficit.run import run_dir
from rankdeficit.run import storage


def _fmt(x, pct=False, digits=4):
  if x is None:
    return 'n/a'
  if pct:
    return f'{100 * x:.1f}%'
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  return f'{x:.{digits}g}'


def _summary_rows(a: dict) -> list[tuple[str, str]]:
  convention = a.get('probe_convention', probe_layers.DEFAULT_CONVENTION)
  rows = [('test accuracy', _fmt(a.get('test_accuracy'), pct=True))]
  for c in probe_layers.CONVENTIONS:
    tag = f'{c} convention' + (' (default)' if c == convention else '')
    rows.append(
      (f'kappa (effective depth), {tag}', _fmt(a.get('kappa_by_convention', {}).get(c), pct=True))
    )
  for c in probe_layers.CONVENTIONS:
    tag = f'{c} convention' + (' (default)' if c == convention else '')
    rows.append(
      (
        f'rho (OOD generalization loss), {tag}',
        _fmt((a.get('rho_by_convention') or {}).get(c), pct=True),
      )
    )
  rows += [
    (
      'SR (solution rank)',
      f'{_fmt(a.get("solution_rank"))} (bound '
      f'{a.get("solution_rank_bound")}'
      + (
        ', bounded by the classifier width' if a.get('solution_rank_bounded_by_classifier') else ''
      )
      + ')',
    ),
    (f'post-softmax rank (T = {a["temperature"]:g})', _fmt(a.get('post_softmax_rank'))),
  ]
  if a['temperature'] != 1:
    rows.append(('post-softmax rank (T = 1)', _fmt(a.get('post_softmax_rank_T1'))))
  rows += [
    ('logits norm (Frobenius)', _fmt(a.get('logits_norm_frobenius'))),
    ('logits norm (mean per sample)', _fmt(a.get('logits_norm_mean'))),
    ('OrthoDev (penultimate)', _fmt(a.get('orthodev'))),
  ]
  nc = a.get('neural_collapse', {})
  for k in (
    'nc1',
    'nc2_equinorm',
    'nc2_equiangularity',
    'nc2_max_angle',
    'nc2_etf_distance',
    'nc3',
    'nc4',
  ):
    if k in nc:
      rows.append((k.upper().replace('_', ' ', 1), _fmt(nc[k])))
  det = a.get('ood_detection', {})
  if det:
    rows += [
      (f'NECO AUROC (d={det["neco_dim"]})', _fmt(det.get('auroc'), pct=True)),
      ('NECO FPR@95 (NECO conv., ID positive)', _fmt(det.get('fpr95_neco'), pct=True)),
      ('NECO FPR@95 (OpenOOD conv., OOD positive)', _fmt(det.get('fpr95_openood'), pct=True)),
      ('NECO AUPR-In', _fmt(det.get('aupr_in'), pct=True)),
      ('NECO AUPR-Out', _fmt(det.get('aupr_out'), pct=True)),
    ]
  return rows


def to_markdown(a: dict) -> str:
  """Markdown report of an `analyze_run` result."""
  lines = [
    f'# Analysis of `{a["workdir"]}` (step {a["step"]})',
    '',
    f'{a["model"]} on {a["dataset"]} (T = {a["temperature"]:g}), '
    f'OOD: {a["ood_dataset"] or "none"}; examples: '
    + ', '.join(f'{k} {v}' for k, v in a['num_examples'].items()),
    '',
    'Probe conventions: '
    + '; '.join(f'`{c}` = {d}' for c, d in probe_layers.DESCRIPTIONS.items())
    + '.',
    '',
    '| metric | value |',
    '|---|---|',
  ]
  lines += [f'| {k} | {v} |' for k, v in _summary_rows(a)]
  lines += [
    '',
    '| layer | coords (kept/total) | ID probe acc | OOD probe acc | rank | eff. rank | OrthoDev |',
    '|---|---|---|---|---|---|---|',
  ]
  for l in a['layers']:
    kept, total = a['feature_dims'][l]
    lines.append(
      '| '
      + ' | '.join(
        [
          l,
          f'{kept}/{total}',
          _fmt(a.get('id_probe_accuracy', {}).get(l), pct=True),
          _fmt((a.get('ood_probe_accuracy') or {}).get(l), pct=True),
          _fmt(a.get('representation_rank', {}).get(l)),
          _fmt(a.get('representation_effective_rank', {}).get(l)),
          _fmt(a.get('orthodev_per_layer', {}).get(l)),
        ]
      )
      + ' |'
    )
  lines += ['', 'Timings (s): ' + ', '.join(f'{k} {v:.1f}' for k, v in a['timings_s'].items()), '']
  return '\n'.join(lines)


def _savefig(fig, outdir, name: str) -> None:
  with (storage.workdir_path(outdir) / name).open('wb') as f:  # gs:// too
    fig.savefig(f, format='png', dpi=110)


def write_plots(a: dict, outdir) -> None:
  """probe_accuracy.png (Figure 1 style, every probed layer) and representation_rank.png."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  layers = a['layers']
  x = np.arange(1, len(layers) + 1)
  title = f'{a["model"]} {a["dataset"]} T={a["temperature"]:g}'
  fig, ax = plt.subplots(figsize=(7, 3.8))
  ax.plot(x, [a['id_probe_accuracy'][l] for l in layers], 'o-', label=f'ID ({a["dataset"]})')
  if a.get('ood_probe_accuracy'):
    ax.plot(
      x, [a['ood_probe_accuracy'][l] for l in layers], 's-', label=f'OOD ({a["ood_dataset"]})'
    )
  kappa = a.get('kappa')
  if kappa is not None:  # the default convention's layers are the first len(hidden) + 1
    ax.axvline(
      kappa * (len(a['hidden_layers']) + 1),
      color='gray',
      ls=':',
      label=f'kappa={kappa:.0%} ({a["probe_convention"]})',
    )
  ax.set_xticks(x, layers, rotation=45, ha='right', fontsize=7)
  ax.set_ylabel('linear probe accuracy')
  ax.set_ylim(0, 1)
  ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  _savefig(fig, outdir, 'probe_accuracy.png')
  plt.close(fig)
  if a.get('representation_rank'):
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot(x, [a['representation_rank'][l] for l in layers], 'o-', label='numerical rank')
    ax.plot(
      x, [a['feature_dims'][l][0] for l in layers], '--', color='gray', label='coordinates kept'
    )
    ax.set_xticks(x, layers, rotation=45, ha='right', fontsize=7)
    ax.set_ylabel('rank (ID test)')
    ax.set_yscale('log')
    ax.set_title(title + f'  SR={a["solution_rank"]}')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _savefig(fig, outdir, 'representation_rank.png')
    plt.close(fig)


def write_analysis(a: dict, workdir: str, *, plots: bool, timer) -> None:
  """analysis.json, analysis.md and (optionally) the PNG plots in workdir/analysis; the
  plots' time goes into `a['timings_s']['plots']` (`timer`: a `timing.Timer`)."""
  layout = run_dir.RunDir(workdir)
  layout.analysis.mkdir(parents=True, exist_ok=True)
  if plots:
    with timer('plots'):
      write_plots(a, layout.analysis)
    a['timings_s']['plots'] = timer.timings['plots']
  storage.write_json(layout.analysis_file, a, indent=2)
  (layout.analysis / 'analysis.md').write_text(to_markdown(a))
