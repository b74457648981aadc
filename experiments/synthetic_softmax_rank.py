"""Figure 6: softmax raises the rank of a low-rank matrix as its norm grows.

``M = A B^T`` with ``A, B in R^{n x k}``, entries ``U(-1, 1)``, ``k = 1..5``: ``rank(M) = k``
for every scale ``c``, while the post-softmax rank ``rank(softmax(c M))`` (row-wise
softmax, numerical rank with the PyTorch default tolerance in float32) grows with ``c``
(the inverse temperature). The paper does not state ``n``; default 100, averaged over
``--seeds`` draws.

    python -m experiments.synthetic_softmax_rank [--n 100] [--seeds 5] [--outdir DIR]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import parse_args
from experiments import save_figure
from experiments import save_table
from rankdeficit import metrics

NAME = 'synthetic_softmax_rank'


def post_softmax_ranks(
  key: jax.Array, n: int, k: int, scales: np.ndarray
) -> tuple[int, np.ndarray]:
  """(rank(M), [rank(softmax(c M)) for c in scales]) for one draw of ``M = A B^T``."""
  ka, kb = jax.random.split(key)
  a = jax.random.uniform(ka, (n, k), minval=-1.0, maxval=1.0)
  b = jax.random.uniform(kb, (n, k), minval=-1.0, maxval=1.0)
  m = jnp.matmul(a, b.T, precision='highest')
  probs = jax.nn.softmax(jnp.asarray(scales, jnp.float32)[:, None, None] * m[None], axis=-1)
  return int(metrics.numerical_rank(m)), np.asarray(metrics.numerical_rank(probs))


def main(argv=None):
  args = parse_args(
    __doc__.splitlines()[0],
    argv,
    n=(int, 100, 'matrix size n'),
    seeds=(int, 5, 'random draws per k'),
  )
  n, seeds = (12, 2) if args.quick else (args.n, args.seeds)
  scales = np.logspace(-2, 3, 11 if args.quick else 41)
  ks = [1, 2, 3, 4, 5]
  key = jax.random.PRNGKey(args.seed)
  mean_ranks, pre_ranks = {}, {}
  for k in ks:
    runs = [
      post_softmax_ranks(jax.random.fold_in(key, 100 * k + s), n, k, scales) for s in range(seeds)
    ]
    pre_ranks[k] = sorted({r for r, _ in runs})
    mean_ranks[k] = np.mean([r for _, r in runs], axis=0)

  show = np.unique(np.linspace(0, len(scales) - 1, 11).astype(int))
  header = ['c'] + [f'k={k} (rank M={pre_ranks[k]})' for k in ks]
  rows = [[float(scales[i])] + [float(mean_ranks[k][i]) for k in ks] for i in show]
  save_table(
    args.outdir,
    NAME,
    header,
    rows,
    title=(
      f'Figure 6: mean post-softmax rank of softmax(c A B^T), n={n}, {seeds} draws; rank(M) stays k'
    ),
  )

  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  for k in ks:
    ax.plot(scales, mean_ranks[k], label=f'rank(M) = {k}')
  ax.set_xscale('log')
  ax.set_xlabel('scale c (inverse temperature)')
  ax.set_ylabel('rank(softmax(c M))')
  ax.set_title(f'Post-softmax rank, n = {n}')
  ax.legend()
  save_figure(fig, args.outdir, NAME)
  plt.close(fig)
  return mean_ranks, pre_ranks


if __name__ == '__main__':
  main()
