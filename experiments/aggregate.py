"""Tables from a sweep's workdirs: mean +- std over seeds of every analysed point.

    python -m experiments.aggregate --sweep=configs/sweeps/table9.py [--root=runs/sweeps]

Reads `<root>/<sweep>/<point>/analysis/analysis.json` of the points that finished and were
analysed (`rankdeficit.experiment.is_done(workdir, analysed=True)`), groups the points by
their overrides without `seed`, and writes `<root>/<sweep>/table.md` and `table.csv` (each
written whole, then renamed over the previous one, so a reader never sees half a table).
Points still running, killed or diverged are listed under the table, so it is safe to run
at any time while the sweep's jobs are still going.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from absl import app
from absl import flags
import numpy as np

from rankdeficit import experiment
from rankdeficit import sweep as sweep_lib
from rankdeficit.run import run_dir
from rankdeficit.run import storage

# (key of the flattened analysis, column title, shown as a percentage)
METRICS = (
  ('test_accuracy', 'test acc', True),
  ('kappa', 'kappa', True),
  ('rho', 'rho', True),
  ('solution_rank', 'SR', False),
  ('post_softmax_rank', 'post-softmax rank', False),
  ('logits_norm_mean', 'logits norm', False),
  ('neco_auroc', 'NECO AUROC', True),
)


def _record(analysis: dict[str, Any]) -> dict[str, Any]:
  det = analysis.get('ood_detection') or {}
  return {**analysis, 'neco_auroc': det.get('auroc')}


def _group_key(point: experiment.Point) -> tuple:
  stem = os.path.splitext(os.path.basename(point.config))[0]
  return (stem,) + tuple((k, v) for k, v in point.overrides.items() if k != 'seed')


def collect(sweep: sweep_lib.Sweep) -> tuple[list[dict], dict[str, list[str]]]:
  """(rows: one per group with mean/std per metric, {state: [point names]} of the rest)."""
  groups: dict[tuple, list[dict]] = {}
  others: dict[str, list[str]] = {}
  for point in sweep.points:
    if not experiment.is_done(point.workdir, analysed=True):
      others.setdefault(sweep_lib.point_status(point)['state'], []).append(point.name)
      continue
    analysis = storage.read_json(run_dir.RunDir(point.workdir).analysis_file)
    groups.setdefault(_group_key(point), []).append(_record(analysis))
  rows = []
  for key, records in groups.items():
    row = {'config': key[0], **dict(key[1:]), 'seeds': len(records)}
    for metric, _, _ in METRICS:
      vals = np.asarray([r[metric] for r in records if r.get(metric) is not None], np.float64)
      row[f'{metric}_mean'] = float(vals.mean()) if vals.size else None
      row[f'{metric}_std'] = float(vals.std(ddof=1)) if vals.size > 1 else None
    rows.append(row)
  return rows, others


def _cell(row: dict, metric: str, pct: bool) -> str:
  mean, std = row[f'{metric}_mean'], row[f'{metric}_std']
  if mean is None:
    return 'n/a'
  scale, unit = (100, '%') if pct else (1, '')
  text = f'{scale * mean:.3g}{unit}'
  return text + (f' ± {scale * std:.2g}' if std is not None else '')


def to_markdown(name: str, rows: list[dict], others: dict[str, list[str]]) -> str:
  keys = [k for k in rows[0] if not k.endswith(('_mean', '_std')) and k != 'seeds'] if rows else []
  head = keys + ['seeds'] + [title for _, title, _ in METRICS]
  lines = [f'# Sweep `{name}`', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = [str(row.get(k, '')) for k in keys] + [str(row['seeds'])]
    cells += [_cell(row, metric, pct) for metric, _, pct in METRICS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  for state, names in sorted(others.items()):
    lines.append(f'\n{state} ({len(names)}): ' + ', '.join(names))
  return '\n'.join(lines) + '\n'


def _write_whole(path, text: str) -> None:
  tmp = path.parent / f'.{path.name}.tmp'
  tmp.write_text(text)
  tmp.rename(path)


def write_tables(sweep: sweep_lib.Sweep, root: str) -> str:
  rows, others = collect(sweep)
  outdir = storage.workdir_path(root) / sweep.name
  outdir.mkdir(parents=True, exist_ok=True)
  text = to_markdown(sweep.name, rows, others)
  _write_whole(outdir / 'table.md', text)
  buf = io.StringIO()
  if rows:
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  _write_whole(outdir / 'table.csv', buf.getvalue())
  return text


def main(argv):
  del argv
  fl = flags.FLAGS
  sweep = sweep_lib.load_sweep(fl.sweep, fl.root)
  print(write_tables(sweep, fl.root))


if __name__ == '__main__':
  flags.DEFINE_string('sweep', None, 'Sweep file, configs/sweeps/<name>.py.', required=True)
  flags.DEFINE_string('root', 'runs/sweeps', "Parent of the sweep's workdirs.")
  app.run(main)
