"""Figures 6 and 21: the synthetic softmax-rank experiments, in the paper layout.

They need no training run: the existing scripts (`experiments.synthetic_softmax_rank`,
`experiments.rank1_column_softmax`) compute them in seconds; their PNG and table are moved
to `figure_<N>.png` / `figure_<N>.csv` and captioned like every other figure.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

from experiments import rank1_column_softmax
from experiments import synthetic_softmax_rank
from experiments.figures.render import MAX_PNG_BYTES
from experiments.figures.render import Context
from experiments.figures.render import Entry


def render_script(ctx: Context, module, what: str) -> None:
  key = ctx.entry.key
  with tempfile.TemporaryDirectory() as tmp:
    argv = ['--outdir', tmp] + (['--quick'] if ctx.quick else [])
    module.main(argv)
    os.makedirs(ctx.outdir, exist_ok=True)
    png = os.path.join(tmp, f'{module.NAME}.png')
    if os.path.getsize(png) >= MAX_PNG_BYTES:
      raise ValueError(f'{png} is over {MAX_PNG_BYTES} bytes')
    shutil.copyfile(png, os.path.join(ctx.outdir, f'{key}.png'))
    shutil.copyfile(os.path.join(tmp, f'{module.NAME}.csv'), os.path.join(ctx.outdir, f'{key}.csv'))
    with open(os.path.join(tmp, f'{module.NAME}.md')) as f:
      table = f.read()
  size = ' (--quick sizes)' if ctx.quick else ''
  text = [
    f'# {key.replace("_", " ").capitalize()}: {ctx.entry.title}',
    '',
    f'![{key}]({key}.png)',
    '',
    what,
    '',
    table,
    '',
    f'Synthetic matrices, no trained model: the same on every preset{size}. '
    f'Also `python -m {module.__name__}`.',
    '',
  ]
  # Judged on the full sizes: a --quick render marks its verdict as made on other output.
  from experiments.figures import verdicts  # pylint: disable=import-outside-toplevel

  verdict = verdicts.for_caption(ctx.preset, key, ['--quick'] if ctx.quick else [])
  if verdict:
    text += [verdict, '']
  text += [f'Regenerate: `python -m experiments.paper --only={key}`', '']
  with open(os.path.join(ctx.outdir, f'{key}.md'), 'w') as f:
    f.write('\n'.join(text))


ENTRIES = [
  Entry(
    'figure_6',
    'Softmax raises the rank of low-rank matrices as their norm grows',
    (),
    functools.partial(
      render_script,
      module=synthetic_softmax_rank,
      what='Mean post-softmax rank of softmax(c A B^T) against the scale '
      'c (inverse temperature), A, B in R^{n x k} with U(-1, 1) '
      'entries, k = 1..5 (rank(M) = k at every c).',
    ),
  ),
  Entry(
    'figure_21',
    'Column-wise softmax of a rank-1 5x5 matrix over temperatures',
    (),
    functools.partial(
      render_script,
      module=rank1_column_softmax,
      what='Inner products of the columns of softmax(A / T) (column-wise) '
      'and the gap sigma_1 - sigma_n against T, A = u v^T rank 1.',
    ),
  ),
]
