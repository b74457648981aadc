"""The numerical-rank rule: singular values of a scaled matrix and the threshold on them.

One rule for every rank in the library: ``spectral`` applies it to a matrix on one device,
``tsqr`` to a row-sharded matrix after its TSQR reduction. The rule itself (PyTorch's
default tolerance, the bf16/f16 rounding-noise bound, subnormal input) is documented in
``spectral``'s module docstring and docs/metrics.md. These are the building blocks; the
metrics users call are ``spectral.numerical_rank`` / ``effective_rank`` and
``tsqr.streamed_spectrum``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rankdeficit.metrics import numerics

__all__ = [
  'INVALID_RANK',
  'unit_matrix',
  'square_core',
  'svdvals',
  'line_norms',
  'rank_tolerance',
  'largest',
  'is_low_precision',
  'default_tolerance',
  'effective_rank_of_singular_values',
]

# An impossible rank: the answer for non-finite input or an invalid tolerance under jit.
INVALID_RANK = -1


def unit_matrix(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(x / 2**e, e, finite)``, int32 ``e [...]`` with ``max|x| / 2**e`` in ``[1, 2)``.

  ``numerics.pow2_normalize``: exact, and it rescales subnormal input. Non-finite
  matrices become zeros (``finite`` is False for them).
  """
  x = numerics.as_inexact(x)
  finite = numerics.all_finite(x)
  unit, e = numerics.pow2_normalize(x)
  unit = jnp.where(finite[..., None, None], unit, jnp.zeros_like(unit))
  return unit, e[..., 0, 0], finite


def svdvals(unit: jax.Array, finite: jax.Array) -> jax.Array:
  """Singular values of a unit-scaled matrix ``[..., m, n]`` (``unit_matrix``), descending,
  at matmul precision HIGHEST; NaN where ``finite [...]`` is False."""
  with jax.default_matmul_precision('highest'):
    s = jnp.linalg.svd(square_core(unit), compute_uv=False)
  return jnp.where(finite[..., None], s, jnp.nan)


def line_norms(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Largest row and column Euclidean norms of ``x [..., m, n]``, ``[...]`` each."""
  sq = jnp.square(jnp.abs(x))
  rows = jnp.max(jnp.sum(sq, axis=-1), axis=-1, initial=0.0)
  cols = jnp.max(jnp.sum(sq, axis=-2), axis=-1, initial=0.0)
  return jnp.sqrt(rows), jnp.sqrt(cols)


def square_core(x: jax.Array) -> jax.Array:
  """``R`` (``min(m,n)`` square) from a Householder QR of ``x`` (or ``x^T``) when ``x`` is
  at least 2x rectangular: ``x = Q R`` with orthonormal ``Q``, so ``sigma(x) = sigma(R)``
  (backward stable, no Gram matrix); about 2x faster than an SVD of the wide/tall
  matrix on CPU. Square-ish matrices are returned unchanged."""
  m, n = x.shape[-2], x.shape[-1]
  if max(m, n) < 2 * min(m, n):
    return x
  tall = x if m >= n else jnp.swapaxes(x, -1, -2)
  return jnp.linalg.qr(tall, mode='r')


def rank_tolerance(
  sigma: jax.Array,
  shape: tuple[int, int] | jax.Array,
  *,
  atol: float | jax.Array | None = None,
  rtol: float | jax.Array | None = None,
  dtype=jnp.float32,
  line_norms: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
  """Threshold ``tol`` of the numerical rank from singular values ``sigma [..., k]``.

  ``shape`` is ``(m, n)`` of the matrix (it enters the default rule; it may be traced,
  e.g. the number of unmasked rows). ``dtype`` is the dtype of the matrix BEFORE any
  cast up: it selects the default rule. The bf16/f16 rule needs ``line_norms =
  (max_i ||X[i, :]||, max_j ||X[:, j]||)`` (``numerical_rank`` computes them); without
  them it uses their bound ``sigma_1`` (``tol = 2 eps sigma_1``: safe but coarser).
  See the module docstring of ``spectral``.
  """
  sigma = jnp.asarray(sigma)
  if atol is None and rtol is None:
    return default_tolerance(sigma, shape, dtype, line_norms)
  a = 0.0 if atol is None else atol
  r = 0.0 if rtol is None else rtol
  return jnp.maximum(jnp.asarray(a, sigma.dtype), r * largest(sigma))


def largest(sigma: jax.Array) -> jax.Array:
  """``sigma_1`` of descending singular values ``[..., k]`` (0 when ``k = 0``)."""
  return sigma[..., 0] if sigma.shape[-1] > 0 else jnp.zeros(sigma.shape[:-1], sigma.dtype)


def is_low_precision(dtype) -> bool:
  """Whether ``dtype`` is a float narrower than 32 bits (bf16/f16: the rounding-noise rule)."""
  dtype = jnp.dtype(dtype)
  return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def default_tolerance(sigma, shape, dtype, line_norms=None, log2_unit=0):
  """The default tolerance (module docstring of ``spectral``). ``sigma`` and ``line_norms``
  are in units of ``2**log2_unit`` times those of ``X`` (that unit only matters for the
  subnormal term)."""
  m, n = (jnp.asarray(d).astype(sigma.dtype) for d in shape)
  top = largest(sigma)
  dtype = jnp.dtype(dtype)
  low = is_low_precision(dtype)
  # PyTorch's rule (for bf16/f16: with the eps of the float32 SVD, as a floor).
  pytorch = top * jnp.maximum(m, n) * numerics.tolerance_eps(sigma.dtype if low else dtype)
  if not jnp.issubdtype(dtype, jnp.inexact):
    return pytorch  # integers are exact
  # A subnormal entry is rounded to an absolute, not relative, error (<= tiny / 2).
  info = jnp.finfo(dtype)
  tiny = numerics.ldexp(jnp.ones((), sigma.dtype), info.minexp - info.nmant - log2_unit)
  subnormal = tiny * (jnp.sqrt(m) + jnp.sqrt(n))
  if not low:
    return pytorch + subnormal
  # Rounding noise of the entries (docs/metrics.md): 2 sqrt(3) times the bound
  # (u R + tiny/2 sqrt(n) + u C + tiny/2 sqrt(m)) / sqrt(3) on its spectral norm.
  row, col = (top, top) if line_norms is None else line_norms
  return jnp.maximum(float(info.eps) * (row + col) + subnormal, pytorch)


def effective_rank_of_singular_values(s: jax.Array) -> jax.Array:
  """``effective_rank`` from singular values ``s [..., k]`` (any common scale; NaN in, NaN
  out; all zero: 0). Shared by ``spectral.effective_rank`` and ``tsqr.streamed_spectrum``."""
  total = jnp.sum(s, axis=-1, keepdims=True)
  p = s / jnp.where(total > 0, total, 1.0)
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  erank = jnp.exp(-jnp.sum(plogp, axis=-1))
  return jnp.where(total[..., 0] > 0, erank, jnp.where(jnp.isnan(total[..., 0]), jnp.nan, 0.0))
