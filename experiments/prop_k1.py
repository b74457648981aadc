"""Proposition K.1 (App. K): a rank-2 logits matrix whose softmax has full rank n.

``A in R^{n x 2}`` with i.i.d. N(0, 1) entries, rows normalised (``A~``), ``B = A~ A~^T``
(``b_ii = 1``, ``b_ij = cos(theta_ij) < 1``): ``rank(B) = 2`` while the row-wise
``softmax(c B) -> I_n`` as ``c -> inf``, so ``rank(softmax(c B)) = n`` for ``c`` large enough.
The smallest such ``c`` grows with ``n`` (more rows -> closer angles -> ``b_ij`` closer to 1).
Ranks are numerical ranks (PyTorch default tolerance, float32), averaged over draws.

    python -m experiments.prop_k1 [--seeds 5] [--outdir DIR]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import parse_args
from experiments import save_figure
from experiments import save_table
from rankdeficit import metrics

NAME = 'prop_k1'


def rank2_logits(key: jax.Array, n: int) -> jax.Array:
  a = jax.random.normal(key, (n, 2))
  a = a / jnp.linalg.norm(a, axis=1, keepdims=True)
  return jnp.matmul(a, a.T, precision='highest')


def rank_curves(key: jax.Array, sizes, seeds: int, scales: np.ndarray):
  """Draws `seeds` matrices ``B`` per ``n`` in `sizes` and ranks ``softmax(c B)`` over `scales`.

  Returns {n: mean rank per scale} and the table rows (n, ranks of B, max rank of the
  softmax, draws reaching rank n, median smallest scale reaching it).
  """
  curves, rows = {}, []
  for n in sizes:
    pre, post = [], []
    for s in range(seeds):
      b = rank2_logits(jax.random.fold_in(key, 1000 * n + s), n)
      pre.append(int(metrics.numerical_rank(b)))
      probs = jax.nn.softmax(jnp.asarray(scales)[:, None, None] * b[None], axis=-1)
      post.append(np.asarray(metrics.numerical_rank(probs)))
    post = np.stack(post)
    curves[n] = post.mean(axis=0)
    full = post == n
    first_full = [float(scales[np.argmax(f)]) if f.any() else float('nan') for f in full]
    rows.append(
      [
        n,
        sorted(set(pre)),
        float(post.max()),
        int(full.any(axis=1).sum()),
        float(np.nanmedian(first_full)),
      ]
    )
  return curves, rows


def _write_table(outdir: str, seeds: int, rows: list[list]) -> None:
  """Writes the per-n ranks (``.md`` and ``.csv``)."""
  save_table(
    outdir,
    NAME,
    [
      'n',
      'rank(B)',
      'max rank(softmax(cB))',
      f'draws reaching rank n (of {seeds})',
      'median smallest c with rank n',
    ],
    rows,
    title='Proposition K.1: B = A~ A~^T (rank 2) vs rank(softmax(c B)), float32 numerical rank',
  )


def _plot(outdir: str, scales: np.ndarray, curves: dict) -> None:
  """Draws the mean ``rank(softmax(c B)) / n`` over the scale ``c``, one line per n."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  for n, curve in curves.items():
    ax.plot(scales, curve / n, label=f'n = {n}')
  ax.set_xscale('log')
  ax.set_xlabel('scale c')
  ax.set_ylabel('rank(softmax(c B)) / n')
  ax.set_title('rank(B) = 2')
  ax.legend()
  save_figure(fig, outdir, NAME)
  plt.close(fig)


def main(argv=None):
  args = parse_args(__doc__.splitlines()[0], argv, seeds=(int, 5, 'random draws per n'))
  sizes = (5, 10) if args.quick else (5, 10, 20, 50, 100)
  seeds = 2 if args.quick else args.seeds
  scales = np.logspace(-1, 5, 13 if args.quick else 61).astype(np.float32)
  curves, rows = rank_curves(jax.random.PRNGKey(args.seed), sizes, seeds, scales)
  _write_table(args.outdir, seeds, rows)
  from experiments.figures import verdicts  # pylint: disable=import-outside-toplevel

  verdicts.append_theory(args.outdir, NAME, not args.quick and args.seeds == 5 and args.seed == 0)
  _plot(args.outdir, scales, curves)
  return rows


if __name__ == '__main__':
  main()
