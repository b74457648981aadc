"""Floating-point conventions shared by the metrics: compute dtype, rescaling, finiteness.

* Compute dtype: float32 for anything narrower (bf16, f16, ints, bool); float64 stays
  float64 (when ``jax_enable_x64`` is on). Complex input is accepted only by the SVD
  path (``as_inexact``: complex64/complex128 stay complex, singular values are real);
  ``as_float`` refuses it with a ``ValueError`` instead of dropping the imaginary part.
* Tolerance dtype: the default rank tolerance depends on the INPUT dtype, before the
  cast up (bf16/f16: the rounding of the entries; see ``spectral.rank_tolerance``).
  Integer/bool inputs are exact and use float32's eps.
* Rescaling: scale-invariant quantities (ranks, stable/effective rank, cosines,
  normalised norms) are computed on ``x / max|x|``, so finite inputs near the float32
  limit (|x| ~ 1e30, whose squares overflow) still give finite, correct numbers. The
  SVD path divides by a power of two computed from the bits (``pow2_normalize``), which
  is exact and also rescales subnormal input (XLA on CPU flushes subnormals to zero in
  any float arithmetic, so ``x / max|x|`` would give the zero matrix).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rankdeficit.metrics import checks


def compute_dtype(dtype) -> jnp.dtype:
  """float32 for anything narrower (bf16, f16, ints, bool); float64 stays float64."""
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float64:
    return jnp.dtype(jnp.float64)
  return jnp.dtype(jnp.float32)


def tolerance_eps(dtype) -> float:
  """Machine epsilon of the input dtype (of its real part if complex; float32's for
  integer/bool inputs)."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.inexact):
    return float(jnp.finfo(dtype).eps)
  return float(jnp.finfo(jnp.float32).eps)


def as_float(x: jax.Array, name: str = 'input') -> jax.Array:
  """``x`` as a real jax array of its compute dtype; complex ``x`` raises ``ValueError``."""
  x = jnp.asarray(x)
  checks.real(name, x)
  return x.astype(compute_dtype(x.dtype))


def as_inexact(x: jax.Array) -> jax.Array:
  """Like ``as_float``, but complex64/complex128 stay complex (the SVD path)."""
  x = jnp.asarray(x)
  if jnp.iscomplexobj(x):
    return x
  return x.astype(compute_dtype(x.dtype))


def _int_type(dtype):
  return jnp.int64 if jnp.finfo(dtype).bits == 64 else jnp.int32


def pow2(e: jax.Array, dtype) -> jax.Array:
  """``2.0 ** e`` for integer ``e``, built from the bits; 0 below the normal range."""
  info = jnp.finfo(dtype)
  e = jnp.asarray(e).astype(_int_type(dtype))
  bits = (jnp.clip(e, info.minexp, info.maxexp - 1) + (info.maxexp - 1)) << info.nmant
  return jnp.where(e >= info.minexp, jax.lax.bitcast_convert_type(bits, dtype), 0)


def ldexp(x: jax.Array, e: jax.Array) -> jax.Array:
  """``x * 2**e`` in two factors, so ``2**e`` itself need not be representable."""
  x = jnp.asarray(x)
  half = jnp.asarray(e) // 2
  return x * pow2(half, x.dtype) * pow2(e - half, x.dtype)


def _split(x: jax.Array):
  """``|x| = mant * 2**expo`` exactly (integer ``mant``), from the bits of real ``x``,
  with ``floor(log2|x|)`` and whether the entry is finite and non-zero."""
  info = jnp.finfo(x.dtype)
  itype = _int_type(x.dtype)
  bits = jax.lax.bitcast_convert_type(x, itype)
  mag = bits & jnp.iinfo(itype).max
  field = mag >> info.nmant  # biased exponent; 0 for zero and subnormals
  frac = mag & ((1 << info.nmant) - 1)
  mant = jnp.where(field > 0, frac | (1 << info.nmant), frac)
  expo = jnp.maximum(field, 1) - (info.maxexp - 1 + info.nmant)
  top = expo + (info.bits - 1 - jax.lax.clz(mant))
  ok = (field < (1 << info.nexp) - 1) & (mag != 0)
  return mant, expo, bits < 0, top, ok


def pow2_normalize(x: jax.Array, axis=(-2, -1)) -> tuple[jax.Array, jax.Array]:
  """``(x / 2**e, e)``: ``e`` (int, kept axes) puts the largest finite ``|x|`` (complex:
  largest real or imaginary part) over ``axis`` in ``[1, 2)``; 0 when there is none.

  Exact, and computed from the bits, so subnormal input is rescaled too (float
  arithmetic on XLA's CPU flushes it to zero). Entries below ``2^-100 max|x|`` become 0.
  """
  parts = (jnp.real(x), jnp.imag(x)) if jnp.iscomplexobj(x) else (x,)
  splits = [_split(p) for p in parts]
  low = jnp.iinfo(jnp.int32).min
  tops = [jnp.max(jnp.where(ok, top, low), axis=axis, keepdims=True) for _, _, _, top, ok in splits]
  e = functools.reduce(jnp.maximum, tops)
  e = jnp.where(e == low, 0, e)
  units = []
  for mant, expo, negative, _, _ in splits:
    v = mant.astype(parts[0].dtype) * pow2(expo - e, parts[0].dtype)
    units.append(jnp.where(negative, -v, v))
  unit = jax.lax.complex(*units) if len(units) == 2 else units[0]
  return unit, e.astype(jnp.int32)


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
