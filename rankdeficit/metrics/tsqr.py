"""Singular values, numerical rank and effective rank of a row-sharded matrix, by TSQR.

A matrix ``X [m, d]`` whose rows are sharded over a mesh axis (``'data'``) is never
gathered. Each device reduces its block of rows to a triangular factor (Householder QR,
``X_b = Q_b R_b``; a block with at most ``d`` rows is its own factor), the factors are
combined up a binary tree over the devices (``R = qr([R_a; R_b]).R``: ``log2(P)`` levels
of ``ppermute``, any device count), and the SVD of the root's ``R`` (``min(m, d) x d``)
gives the singular values: ``X = Q R`` with ``Q`` orthonormal, so ``sigma(X) =
sigma(R)``. Only ``R`` factors (at most ``d x d``) travel, and only the singular values
(``d`` numbers) are broadcast back.

Precision: every step is a Householder QR or an SVD of the matrix itself -- the same
backward-stable reduction ``spectral.singular_values`` applies to a tall matrix -- never
a Gram matrix, so the computed singular values carry an absolute error of a few
``eps(float32) * sigma_1`` (tests/metrics/test_tsqr.py: within ``1e-5 sigma_1`` of the
float64 SVD of the gathered matrix). The rank is the library's
(``spectral.numerical_rank``: ``#{sigma_i > tol}``, PyTorch's default tolerance with ``m``
the number of unmasked rows, bf16/f16 input with its rounding-noise rule), on ``X / 2^e``
with ``2^e`` the largest entry's power of two over all blocks; docs/metrics.md ("Streamed
ranks") compares this with the Gram route.

Padded rows (``row_mask`` False) are zeroed, so they add no rank, and ``m`` counts only
the real rows. Non-finite input gives rank -1 and NaN singular values / effective rank.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from rankdeficit.metrics import numerics
from rankdeficit.metrics import rank_rule
from rankdeficit.metrics import row_blocks
from rankdeficit.metrics.row_blocks import DATA_AXIS

__all__ = [
  'streamed_spectrum',
  'streamed_singular_values',
  'streamed_numerical_rank',
  'streamed_effective_rank',
]

_INT_MIN = jnp.iinfo(jnp.int32).min


def _block_r(x: jax.Array) -> jax.Array:
  """A triangular factor of the rows ``x``: Householder ``R`` when taller than wide."""
  if x.shape[0] <= x.shape[1]:
    return x
  with jax.default_matmul_precision('highest'):
    return jnp.linalg.qr(x, mode='r')


def _combine(r: jax.Array, axis: str | None) -> jax.Array:
  """The factors of every block combined up a binary tree; the result is on block 0.

  At level ``s`` block ``i`` with ``i % 2s == s`` sends its factor to ``i - s``, which
  stacks it under its own and reduces the pair (blocks without a partner receive zeros,
  which change no singular value). Other blocks skip the QR (``lax.cond``).
  """
  n, idx, step = row_blocks.num_blocks(axis), row_blocks.block_index(axis), 1
  while step < n:
    pairs = [(i, i - step) for i in range(n) if i % (2 * step) == step]
    stacked = jnp.concatenate([r, jax.lax.ppermute(r, axis, pairs)])
    if stacked.shape[0] > stacked.shape[1]:
      width = stacked.shape[1]
      r = jax.lax.cond(idx % (2 * step) == 0, _block_r, lambda s: s[:width], stacked)
    else:
      r = stacked
    step *= 2
  return r


def _unit_block(x: jax.Array, axis: str | None):
  """This block divided by ``2^e`` (``e``: the largest entry's exponent over every block,
  as ``numerics.pow2_normalize`` does for one matrix), ``e``, and global finiteness."""
  finite = row_blocks.psum(jnp.sum(~jnp.isfinite(x)), axis) == 0
  unit, e_local = numerics.pow2_normalize(x)
  has = jnp.any(jnp.isfinite(x) & (x != 0))
  e = row_blocks.pmax(jnp.where(has, e_local[0, 0], _INT_MIN), axis)
  e = jnp.where(e == _INT_MIN, 0, e)
  real = jnp.real(unit).dtype
  unit = unit * numerics.pow2(e_local[0, 0] - e, real).astype(unit.dtype)
  return jnp.where(finite, unit, jnp.zeros_like(unit)), e, finite


def _line_norms(unit: jax.Array, axis: str | None):
  """Largest row and column norms of the whole (unit-scaled) matrix (bf16/f16 rule)."""
  sq = jnp.square(jnp.abs(unit))
  rows = row_blocks.pmax(jnp.max(jnp.sum(sq, axis=1), initial=0.0), axis)
  cols = jnp.max(row_blocks.psum(jnp.sum(sq, axis=0), axis), initial=0.0)
  return jnp.sqrt(rows), jnp.sqrt(cols)


def _spectrum_body(x, row_mask, *, axis, low_precision: bool):
  """Per block: unit singular values of the whole matrix (replicated), ``e``, the number
  of real rows, finiteness and (bf16/f16 input) the line norms."""
  x = numerics.as_inexact(x).reshape(x.shape[0], -1)
  x = jnp.where(row_mask[:, None], x, jnp.zeros_like(x))
  rows = row_blocks.psum(jnp.sum(row_mask.astype(jnp.int32)), axis)
  unit, e, finite = _unit_block(x, axis)
  norms = _line_norms(unit, axis) if low_precision else None
  r = _combine(_block_r(unit), axis)
  k = min(r.shape)

  s = jax.lax.cond(
    row_blocks.block_index(axis) == 0,
    lambda r: rank_rule.svdvals(r, finite),
    lambda r: row_blocks.varying(jnp.zeros((k,), jnp.real(r).dtype), axis),
    r,
  )
  return row_blocks.psum(s, axis), e, rows, finite, norms


@functools.partial(jax.jit, static_argnames=('mesh', 'axis'))
def _spectrum(x, row_mask, *, mesh, axis):
  input_dtype = x.dtype
  low = rank_rule.is_low_precision(input_dtype)
  if row_mask is None:
    row_mask = jnp.ones(x.shape[:1], bool)
  body = functools.partial(_spectrum_body, low_precision=low)
  s, e, rows, finite, norms = row_blocks.over_rows(
    body,
    (x, row_mask),
    in_specs=(P(axis), P(axis)),
    out_specs=P(),
    mesh=mesh,
    axis=axis,
  )
  d = x.size // x.shape[0]
  tol = rank_rule.default_tolerance(s, (rows, d), input_dtype, norms, log2_unit=e)
  rank = jnp.sum(s > tol, dtype=jnp.int32)
  return {
    'singular_values': numerics.ldexp(s, e),
    'numerical_rank': jnp.where(finite, rank, rank_rule.INVALID_RANK),
    'effective_rank': rank_rule.effective_rank_of_singular_values(s),
  }


def streamed_spectrum(
  x: jax.Array, row_mask: jax.Array | None = None, *, axis: str = DATA_AXIS
) -> dict[str, jax.Array]:
  """Singular values, numerical rank and effective rank of ``x [m, ...]`` (flattened to
  ``[m, d]``) from one TSQR over the devices of ``axis`` (see the module docstring).

  Args:
    x: rows sharded over mesh axis ``axis`` (found on the array, else the context mesh;
      unsharded input runs as one block). ``m`` must split evenly over the devices.
    row_mask: optional ``[m]`` bool, sharded like ``x``; False rows are padding.
    axis: the mesh axis of the rows.
  Returns:
    ``{'singular_values': [min(m, d)] descending (in the units of x; padding counts in
    m here), 'numerical_rank': int32, 'effective_rank': float}``, replicated.
  """
  mesh = row_blocks.row_mesh(x, axis)
  row_blocks.check_divisible(x, mesh, axis)
  return _spectrum(x, row_mask, mesh=mesh, axis=axis)


def streamed_singular_values(
  x: jax.Array, row_mask: jax.Array | None = None, *, axis: str = DATA_AXIS
) -> jax.Array:
  """``singular_values`` of a row-sharded matrix, by TSQR (``streamed_spectrum``)."""
  return streamed_spectrum(x, row_mask, axis=axis)['singular_values']


def streamed_numerical_rank(
  x: jax.Array, row_mask: jax.Array | None = None, *, axis: str = DATA_AXIS
) -> jax.Array:
  """``numerical_rank`` (default tolerance, masked rows removed) of a row-sharded matrix,
  by TSQR (``streamed_spectrum``)."""
  return streamed_spectrum(x, row_mask, axis=axis)['numerical_rank']


def streamed_effective_rank(
  x: jax.Array, row_mask: jax.Array | None = None, *, axis: str = DATA_AXIS
) -> jax.Array:
  """``effective_rank`` of a row-sharded matrix, by TSQR (``streamed_spectrum``)."""
  return streamed_spectrum(x, row_mask, axis=axis)['effective_rank']
