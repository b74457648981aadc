"""Synthetic / theory experiments of the paper (Section 3, App. J, K) and result helpers.

Each script runs as ``python -m experiments.<name> [--outdir DIR] [--quick]``, prints a
markdown table, and writes ``<name>.png``, ``<name>.md`` and ``<name>.csv`` to ``--outdir``
(default ``experiments/results/``).
"""

from __future__ import annotations

import argparse
import csv
import os
from typing import Sequence

DEFAULT_OUTDIR = os.path.join(os.path.dirname(__file__), 'results')


def parse_args(description: str, argv: Sequence[str] | None = None, **extra) -> argparse.Namespace:
  """``--outdir`` / ``--quick`` / ``--seed`` plus ``extra`` (``name=(type, default, help)``)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--outdir', default=DEFAULT_OUTDIR, help='where tables and the PNG go')
  parser.add_argument('--quick', action='store_true', help='tiny sizes (smoke test)')
  parser.add_argument('--seed', type=int, default=0)
  for name, (typ, default, help_) in extra.items():
    parser.add_argument(f'--{name}', type=typ, default=default, help=help_)
  return parser.parse_args(argv)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  fmt = lambda v: f'{v:.4g}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def save_table(
  outdir: str, name: str, header: Sequence[str], rows: Sequence[Sequence], title: str = ''
) -> str:
  """Write ``name.md`` and ``name.csv``; return the markdown text (also printed)."""
  os.makedirs(outdir, exist_ok=True)
  text = markdown_table(header, rows)
  if title:
    text = f'{title}\n\n{text}'
  with open(os.path.join(outdir, f'{name}.md'), 'w') as f:
    f.write(text + '\n')
  with open(os.path.join(outdir, f'{name}.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  print(text)
  return text


def save_figure(fig, outdir: str, name: str) -> str:
  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, f'{name}.png')
  fig.savefig(path, dpi=120, bbox_inches='tight')
  print(f'saved {path}')
  return path
