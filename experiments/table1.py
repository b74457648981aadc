"""Table 1 from per-run records: the paper's numbers, mean +- std over seeds, the files.

A record is one run's flattened analysis (`experiments.records.flat_record`) plus who it is
(`experiment`, `label`, `paper`, `temperature`, `seed`, ...). `aggregate` groups records by
(experiment, T); `to_markdown` / `write_tables` write `table1.md` and `table1.csv` beside the
paper's numbers (`PAPER_TABLE1`); `write_runs` keeps the `RUN_FIELDS` of every run in
`runs.jsonl`. `experiments.reproduce_table1` and the figures' Table 1
(`experiments/figures/tables.py`) both write their tables through here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np

from rankdeficit.analysis import probe_layers

# Paper Table 1 (kappa %, rho %, SR): baseline (T=1) and low logit norm.
PAPER_TABLE1 = {
  'CIFAR-10 / MLP': ((75, 67, 9), (38, 78, 9)),
  'CIFAR-10 / ResNet18': ((100, 29, 9), (67, 54, 9)),
  'CIFAR-10 / ResNet20': ((100, 10, 9), (75, 34, 9)),
  'CIFAR-100 / ResNet18': ((100, 19, 99), (83, 50, 59)),
  'CIFAR-100 / ResNet34': ((100, 16, 99), (68, 51, 72)),
  'ImageNet-100 / ResNet34': ((100, 6, 99), (85, 52, 42)),
  'ImageNet-100 / ResNet50': ((100, 5, 99), (78, 50, 27)),
  'ImageNet-1k / ResNet34': ((100, 5, 512), (82, 23, 122)),
  'ImageNet-1k / ResNet50': ((100, 5, 947), (78, 22, 128)),
}

# Metrics aggregated over seeds: (key in the analysis, column title, percent?).
METRICS = (
  ('test_accuracy', 'test acc', True),
  ('kappa', f'kappa ({probe_layers.DEFAULT_CONVENTION} conv.)', True),
  ('rho', f'rho ({probe_layers.DEFAULT_CONVENTION} conv.)', True),
  ('solution_rank', 'SR', False),
  ('post_softmax_rank', 'post-softmax rank', False),
  ('logits_norm_mean', 'logits norm (mean/sample)', False),
  ('init_logits_norm', 'init logits norm', False),
  ('orthodev', 'OrthoDev', False),
  ('neco_auroc', 'NECO AUROC', True),
  ('neco_fpr95', 'NECO FPR95 (NECO conv.)', True),
)


# kappa / rho under every convention of rankdeficit.analysis.probe_layers (second table).
CONVENTION_METRICS = tuple(
  (f'{name}_{conv}', f'{name} ({conv})', True)
  for name in ('kappa', 'rho')
  for conv in probe_layers.CONVENTIONS
)


def aggregate(records: list[dict]) -> list[dict]:
  """Mean/std over seeds per (experiment, temperature)."""
  groups: dict[tuple, list[dict]] = {}
  for r in records:
    groups.setdefault((r['experiment'], r['temperature']), []).append(r)
  rows = []
  for (exp, temp), rs in groups.items():
    row = {
      'experiment': exp,
      'label': rs[0]['label'],
      'paper': rs[0]['paper'],
      'temperature': temp,
      'seeds': len(rs),
      'num_classes': rs[0].get('num_classes'),
      'solution_rank_bound': rs[0].get('solution_rank_bound'),
    }
    for key, _, _ in METRICS + CONVENTION_METRICS:
      vals = [r.get(key) for r in rs]
      vals = np.asarray([v for v in vals if v is not None], np.float64)
      row[f'{key}_mean'] = float(vals.mean()) if vals.size else None
      row[f'{key}_std'] = float(vals.std(ddof=1)) if vals.size > 1 else (0.0 if vals.size else None)
      row[f'{key}_n'] = int(vals.size)
    rows.append(row)
  return rows


def _pm(row, key, pct):
  m, s = row.get(f'{key}_mean'), row.get(f'{key}_std')
  if m is None or (isinstance(m, float) and math.isnan(m)):
    return 'n/a'
  if pct:
    return f'{100 * m:.0f}% ± {100 * s:.0f}' if row['seeds'] > 1 else f'{100 * m:.0f}%'
  if abs(m) >= 100 or float(m).is_integer():
    return f'{m:.1f} ± {s:.1f}' if row['seeds'] > 1 else f'{m:.4g}'
  return f'{m:.3g} ± {s:.2g}' if row['seeds'] > 1 else f'{m:.3g}'


def to_markdown(rows: list[dict], preset: str) -> str:
  """table1.md: aggregated rows beside the paper's numbers, then kappa / rho per convention."""
  lines = [
    f'# Table 1 reproduction (preset `{preset}`)',
    '',
    "kappa / rho / SR as mean ± std over seeds (this run) next to the paper's numbers "
    '(full scale; baseline T=1, "low logit norm" here T=100). '
    'kappa: effective depth (ID probes), rho: OOD generalization loss (OOD probes), '
    'SR: numerical rank of the test-set logits. FPR95 uses the NECO convention '
    '(ID positive).',
    '',
  ]
  head = ['setting', 'T', 'seeds'] + [title for _, title, _ in METRICS] + ['paper kappa / rho / SR']
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    paper = PAPER_TABLE1.get(row['paper'] or '')
    ref = 'n/a'
    if paper:
      k, r, sr = paper[0] if row['temperature'] == 1 else paper[1]
      regime = 'baseline' if row['temperature'] == 1 else 'low logit norm'
      ref = f'{k}% / {r}% / {sr} ({row["paper"]}, {regime})'
    cells = [row['label'] or row['experiment'], f'{row["temperature"]:g}', str(row['seeds'])]
    cells += [_pm(row, key, pct) for key, _, pct in METRICS]
    sr_note = ''
    if row.get('solution_rank_bound') is not None:
      sr_note = f' (max {row["solution_rank_bound"]})'
    cells[3 + [m[0] for m in METRICS].index('solution_rank')] += sr_note
    lines.append('| ' + ' | '.join(cells + [ref]) + ' |')
  lines += [
    '',
    '## kappa and rho under every probe convention',
    '',
    'Conventions (rankdeficit/analysis/probe_layers.py): '
    + '; '.join(f'`{c}` = {d}' for c, d in probe_layers.DESCRIPTIONS.items())
    + '.',
    '',
  ]
  head = ['setting', 'T', 'seeds'] + [title for _, title, _ in CONVENTION_METRICS]
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = [row['label'] or row['experiment'], f'{row["temperature"]:g}', str(row['seeds'])]
    cells += [_pm(row, key, pct) for key, _, pct in CONVENTION_METRICS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines.append('')
  return '\n'.join(lines)


def write_atomically(path: str, text: str) -> None:
  """Readers (another call on the same outdir) see the old file or the new one, never half."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', newline='') as f:
    f.write(text)
  os.replace(tmp, path)


def write_tables(rows: list[dict], outdir: str, preset: str) -> None:
  """`<outdir>/table1.md` and `table1.csv` (with the paper's numbers) of aggregated rows."""
  write_atomically(os.path.join(outdir, 'table1.md'), to_markdown(rows, preset))
  fields = (
    ['experiment', 'label', 'temperature', 'seeds']
    + [f'{k}_{s}' for k, _, _ in METRICS + CONVENTION_METRICS for s in ('mean', 'std')]
    + ['paper', 'paper_kappa', 'paper_rho', 'paper_sr']
  )
  text = io.StringIO()
  w = csv.DictWriter(text, fieldnames=fields, extrasaction='ignore')
  w.writeheader()
  for row in rows:
    paper = PAPER_TABLE1.get(row['paper'] or '')
    extra = {}
    if paper:
      k, r, sr = paper[0] if row['temperature'] == 1 else paper[1]
      extra = {'paper_kappa': k / 100, 'paper_rho': r / 100, 'paper_sr': sr}
    w.writerow({**row, **extra})
  write_atomically(os.path.join(outdir, 'table1.csv'), text.getvalue())


# Per-run fields kept in runs.jsonl (one line per run, rewritten on every update).
RUN_FIELDS = (
  'experiment',
  'init',
  'augment',
  'depth',
  'temperature',
  'seed',
  'num_train',
  'num_epochs',
  'run',
  'test_accuracy',
  'probe_convention',
  'kappa',
  'rho',
  'kappa_by_convention',
  'rho_by_convention',
  'solution_rank',
  'post_softmax_rank',
  'logits_norm_mean',
  'init_logits_norm',
  'orthodev',
  'neco_auroc',
  'neco_fpr95',
  'id_probe_accuracy',
  'ood_probe_accuracy',
  'representation_rank',
  'representation_effective_rank',
  'train_seconds',
  'analysis_seconds',
  'label',
  'paper',
  'num_classes',
  'solution_rank_bound',
)


def write_runs(records: list[dict], outdir: str) -> None:
  """`<outdir>/runs.jsonl`: the RUN_FIELDS of every record, one line per run."""
  write_atomically(
    os.path.join(outdir, 'runs.jsonl'),
    ''.join(json.dumps({k: rec.get(k) for k in RUN_FIELDS}) + '\n' for rec in records),
  )
