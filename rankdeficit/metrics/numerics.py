"""Floating-point conventions shared by the metrics: compute dtype, rescaling, finiteness.

* Compute dtype: float32 for anything narrower (bf16, f16, ints, bool); float64 stays
  float64 (when ``jax_enable_x64`` is on).
* Tolerance dtype: the default rank tolerance uses the machine epsilon of the INPUT
  dtype, before the cast up (bf16 eps = 2^-7, f16 eps = 2^-10), as PyTorch's
  ``matrix_rank`` does: the rounding of a bf16 matrix is noise at that level, so it must
  not count as rank. Integer/bool inputs are exact and use float32's eps.
* Rescaling: scale-invariant quantities (ranks, stable/effective rank, cosines,
  normalised norms) are computed on ``x / max|x|``, so finite inputs near the float32
  limit (|x| ~ 1e30, whose squares overflow) still give finite, correct numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(dtype) -> jnp.dtype:
  """float32 for anything narrower (bf16, f16, ints, bool); float64 stays float64."""
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float64:
    return jnp.dtype(jnp.float64)
  return jnp.dtype(jnp.float32)


def tolerance_eps(dtype) -> float:
  """Machine epsilon of the input dtype (float32's for integer/bool inputs)."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.floating):
    return float(jnp.finfo(dtype).eps)
  return float(jnp.finfo(jnp.float32).eps)


def as_float(x: jax.Array) -> jax.Array:
  """``x`` as a jax array of its compute dtype."""
  x = jnp.asarray(x)
  return x.astype(compute_dtype(x.dtype))


def all_finite(x: jax.Array, axis=(-2, -1)) -> jax.Array:
  """Whether every entry along ``axis`` is finite."""
  return jnp.all(jnp.isfinite(x), axis=axis)


def max_abs_scale(x: jax.Array, axis=(-2, -1)) -> jax.Array:
  """``max|x|`` over ``axis`` (kept as size-1 axes); 1 where that is 0 or not finite."""
  scale = jnp.max(jnp.abs(x), axis=axis, keepdims=True, initial=0.0)
  return jnp.where(jnp.isfinite(scale) & (scale > 0), scale, jnp.ones_like(scale))


def norm(x: jax.Array, axis=-1) -> jax.Array:
  """Euclidean/Frobenius norm over ``axis`` without overflow of the squares."""
  scale = max_abs_scale(x, axis)
  return jnp.sqrt(jnp.sum(jnp.square(x / scale), axis=axis)) * jnp.squeeze(scale, axis)


def unit_rows(x: jax.Array) -> jax.Array:
  """Rows of ``x [..., k, d]`` scaled to unit norm (zero rows stay zero)."""
  x = x / max_abs_scale(x, -1)
  n = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(n > 0, n, 1.0)
