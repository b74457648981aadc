"""Figure 21 (App. J): column-wise softmax of a rank-1 5x5 matrix over temperatures.

``A = u v^T`` (``u, v ~ U(-1, 1)^5``, so ``rank(A) = 1``); ``S(T) = softmax(A / T)`` applied
to each COLUMN (every column of ``S`` is a probability vector over the 5 rows). Column
``j`` is ``softmax(v_j u / T)``, whose largest entry sits at ``argmax u`` if ``v_j > 0`` and
at ``argmin u`` if ``v_j < 0``. As ``T`` decreases, inner products ``<s_i, s_j>`` of columns
with DIFFERENT argmax indices fall towards 0 while those with the SAME index rise towards 1;
the gap ``sigma_1(S) - sigma_n(S)`` shrinks (Proposition 3.1 / J.2) and the numerical rank
of ``S`` grows, most strongly around the bifurcation temperature.

    python -m experiments.rank1_column_softmax [--outdir DIR]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import parse_args
from experiments import save_figure
from experiments import save_table
from rankdeficit import metrics

NAME = 'rank1_column_softmax'


def column_softmax_stats(a: jax.Array, temperatures: np.ndarray):
  """Per temperature: columns' Gram matrix, singular values and numerical rank of S."""
  t = jnp.asarray(temperatures, jnp.float32)[:, None, None]
  s = jax.nn.softmax(a[None] / t, axis=-2)  # softmax over rows = column-wise
  gram = jnp.einsum('tij,tik->tjk', s, s, precision='highest')
  return (
    np.asarray(gram),
    np.asarray(metrics.singular_values(s)),
    np.asarray(metrics.numerical_rank(s)),
  )


def rank1_matrix(seed: int, n: int) -> jax.Array:
  """``A = u v^T`` with ``u, v ~ U(-1, 1)^n`` drawn from `seed`."""
  key_u, key_v = jax.random.split(jax.random.PRNGKey(seed))
  u = jax.random.uniform(key_u, (n,), minval=-1.0, maxval=1.0)
  v = jax.random.uniform(key_v, (n,), minval=-1.0, maxval=1.0)
  return jnp.outer(u, v)


def argmax_rows(a: jax.Array) -> np.ndarray:
  """Per column of ``A``, the row its column softmax concentrates on as ``T -> 0``."""
  return np.argmax(np.asarray(jax.nn.softmax(a / 1e-3, axis=0)), axis=0)


def pair_means(gram: np.ndarray, argmax_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per T, mean ``<s_i, s_j>`` over pairs i != j of same / different argmax row (NaN: none)."""
  n = len(argmax_row)
  same = (argmax_row[:, None] == argmax_row[None, :]) & ~np.eye(n, dtype=bool)
  diff = argmax_row[:, None] != argmax_row[None, :]
  mean_same = np.where(same.any(), (gram * same).sum((1, 2)) / max(same.sum(), 1), np.nan)
  mean_diff = np.where(diff.any(), (gram * diff).sum((1, 2)) / max(diff.sum(), 1), np.nan)
  return mean_same, mean_diff


def _write_table(outdir, temperatures, gap, sv, ranks, pairs, argmax_row) -> None:
  """Writes the table at 11 temperatures spread over the sweep (``.md`` and ``.csv``)."""
  n = len(argmax_row)
  mean_same, mean_diff = pairs
  show = np.unique(np.linspace(0, len(temperatures) - 1, 11).astype(int))
  rows = [
    [
      float(temperatures[i]),
      float(gap[i]),
      float(sv[i, -1]),
      int(ranks[i]),
      float(mean_same[i]),
      float(mean_diff[i]),
    ]
    for i in show
  ]
  header = [
    'T',
    'sigma_1 - sigma_n',
    'sigma_n',
    'rank(S)',
    'mean <s_i,s_j> same argmax',
    'mean <s_i,s_j> different argmax',
  ]
  save_table(
    outdir,
    NAME,
    header,
    rows,
    title=(
      f'Figure 21: column softmax of rank-1 {n}x{n} A=u v^T '
      f'(argmax rows of columns: {argmax_row.tolist()})'
    ),
  )


def _plot(outdir, temperatures, gap, ranks, gram, argmax_row) -> None:
  """Draws the gap and rank (top) and every column pair's inner product (bottom) over T."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, (ax_top, ax_bot) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True)
  ax_top.plot(temperatures, gap, label=r'$\sigma_1 - \sigma_n$')
  ax_r = ax_top.twinx()
  ax_r.step(temperatures, ranks, color='tab:red', where='mid', label='rank(S)')
  ax_r.set_ylabel('numerical rank', color='tab:red')
  ax_top.set_ylabel(r'$\sigma_1(S) - \sigma_n(S)$')
  ax_top.legend(loc='upper left')
  n = len(argmax_row)
  for i in range(n):
    for j in range(i + 1, n):
      style = '-' if argmax_row[i] == argmax_row[j] else '--'
      ax_bot.plot(temperatures, gram[:, i, j], style, lw=1)
  ax_bot.set_xscale('log')
  ax_bot.set_xlabel('temperature T')
  ax_bot.set_ylabel(r'$\langle s_i, s_j \rangle$ (solid: same argmax)')
  save_figure(fig, outdir, NAME)
  plt.close(fig)


def main(argv=None):
  args = parse_args(__doc__.splitlines()[0], argv, n=(int, 5, 'matrix size'))
  a = rank1_matrix(args.seed, args.n)
  temperatures = np.logspace(-3, 2, 16 if args.quick else 101)
  gram, sv, ranks = column_softmax_stats(a, temperatures)
  argmax_row = argmax_rows(a)
  gap = sv[:, 0] - sv[:, -1]
  pairs = pair_means(gram, argmax_row)
  _write_table(args.outdir, temperatures, gap, sv, ranks, pairs, argmax_row)
  _plot(args.outdir, temperatures, gap, ranks, gram, argmax_row)
  return temperatures, gap, ranks


if __name__ == '__main__':
  main()
