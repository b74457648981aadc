"""Spectral metrics: singular values, numerical rank and friends.

Every function is a pure function of arrays, jittable and vmappable. Matrices are
``[..., m, n]`` (leading axes are batch axes); the representation helpers take
``[n_samples, ...]`` activations and flatten the trailing axes.

Numerics (the paper's conventions, Section 2 / App. A):

* Singular values are computed from the matrix ITSELF with an SVD, never from a
  Gram/covariance matrix: on ``X^T X`` the relative test ``sigma_i / sigma_1 > tol``
  becomes ``sigma_i / sigma_1 > sqrt(tol)``, i.e. ~29x stricter at n = 10,000.
* Strongly rectangular matrices are first reduced by a Householder QR (``x = QR``,
  ``sigma(x) = sigma(R)``; still the matrix itself, not a Gram matrix).
* The SVD runs in float32 (float64 stays float64 when ``jax_enable_x64`` is on);
  bf16/f16/integer inputs are cast up first. Complex input (complex64/complex128) is an
  SVD of the complex matrix (real singular values) in ``singular_values``,
  ``numerical_rank``, ``effective_rank``, ``stable_rank``, ``top_k_singular_values``
  and ``representation_rank``; the logits metrics (``softmax_rank``, ``logits_norm``,
  ``mean_per_sample_norm``) raise ``ValueError`` for it. Any matmul the SVD lowers to
  (GPU/TPU) runs at ``precision=HIGHEST``.
* Numerical rank (PyTorch ``torch.linalg.matrix_rank`` semantics)::

      rank(X) = #{ i : sigma_i(X) > tol },
      tol     = max(atol, rtol * sigma_1)                      if atol or rtol given
      tol     = sigma_1 * max(m, n) * eps(input dtype) + S       otherwise

  (an unset ``atol`` counts as 0; an unset ``rtol`` counts as 0 when ``atol`` is
  given, as in PyTorch; integers use float32's eps and no ``S``). ``S = tiny(dtype) *
  (sqrt(m) + sqrt(n))``, ``tiny`` the smallest subnormal, bounds the rounding of
  subnormal entries and is negligible unless ``max|X|`` is near the subnormal range.
  For bf16/f16 (any float narrower than 32 bits) the default instead bounds the
  spectral norm of the rounding noise of the entries (derivation in docs/metrics.md,
  "Rank tolerance of bf16/f16 input")::

      tol = max(sigma_1 * max(m, n) * eps(float32), eps(dtype) * (R + C) + S)

  with ``R``/``C`` the largest row/column Euclidean norm of ``X`` (``rms(X) * sqrt(n)``
  and ``rms(X) * sqrt(m)`` for evenly spread entries). ``R, C <= sigma_1``, so the
  rounding term is at most ``2 eps sigma_1``: a non-zero matrix never has rank 0.
  ``atol`` and ``rtol`` are traced (new values do not recompile); a negative or NaN
  tolerance raises ``ValueError`` eagerly and gives rank ``-1`` under ``jit``.
* Scale: the SVD runs on ``x / 2**e`` with ``max|x| / 2**e`` in ``[1, 2)`` (exact, from
  the bits), so |x| ~ 1e30 does not overflow and subnormal input (|x| ~ 1e-40, which
  XLA's CPU flushes to zero in float arithmetic) keeps its rank, effective and stable
  rank. Singular values are returned in the units of ``x``; values below float32's
  normal range (1.2e-38) flush to 0 on CPU.
* Sharding: inputs sharded over an Explicit mesh are replicated first
  (``placement.replicated``; memory cost in that module). ``jnp.linalg.matrix_rank(x, rtol=...)``
  treats its tolerance
  as absolute (jax 0.10.2), so the threshold is built here from the singular values.
* Non-finite input: ``numerical_rank`` returns ``-1`` (an impossible rank) and the
  float-valued metrics return NaN -- never a plausible number.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.metrics import checks
from rankdeficit.metrics import numerics
from rankdeficit.metrics import placement
from rankdeficit.metrics import rank_rule

__all__ = [
  'compute_dtype',
  'singular_values',
  'rank_tolerance',
  'numerical_rank',
  'effective_rank',
  'stable_rank',
  'top_k_singular_values',
  'logits_norm',
  'mean_per_sample_norm',
  'softmax_rank',
  'flatten_features',
  'feature_subset_indices',
  'seeded_subset_indices',
  'representation_matrix',
  'representation_rank',
]

INVALID_RANK = rank_rule.INVALID_RANK
compute_dtype = numerics.compute_dtype
rank_tolerance = rank_rule.rank_tolerance


def _unit_singular_values(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Singular values of ``x / 2**e`` and ``e [...]`` (see ``_unit_matrix``; NaN if not
  finite). Scale-invariant metrics use these directly: for |x| ~ 1e30 the squares
  inside the SVD would overflow float32."""
  unit, e, finite = rank_rule.unit_matrix(x)
  return rank_rule.svdvals(unit, finite), e


@jax.jit
@placement.replicate_inputs
def singular_values(x: jax.Array) -> jax.Array:
  """Singular values of ``x [..., m, n]`` in descending order, ``[..., min(m, n)]``.

  SVD of the matrix itself (``compute_uv=False``), float32, matmul precision HIGHEST,
  computed on ``x / 2**e`` (``max|x| / 2**e`` in ``[1, 2)``) and scaled back. Complex
  input gives the (real) singular values of the complex matrix. Non-finite input
  gives NaN.
  """
  s, e = _unit_singular_values(x)
  return numerics.ldexp(s, e[..., None])


def numerical_rank(
  x: jax.Array,
  *,
  atol: float | jax.Array | None = None,
  rtol: float | jax.Array | None = None,
  row_mask: jax.Array | None = None,
) -> jax.Array:
  """Numerical rank ``#{sigma_i(x) > tol}`` of ``x [..., m, n]`` as int32 ``[...]``.

  Args:
    x: matrix or batch of matrices (any real or complex dtype; the SVD runs in
      float32, or complex64 for complex input).
    atol: absolute threshold (traced: new values do not recompile).
    rtol: threshold relative to ``sigma_1``. ``tol = max(atol, rtol * sigma_1)``.
      With neither, ``tol = sigma_1 * max(m, n) * eps(x.dtype)`` (PyTorch default) for
      float32/float64/complex/integer input; for bf16/f16 input the rounding-noise rule
      of ``rank_tolerance`` (a bf16 matrix of 128+ rows is not rank 0).
    row_mask: optional ``[..., m]`` bool; masked-out rows are zeroed (they carry no
      rank) and ``m`` in the default rule becomes the number of valid rows, so the
      result equals the rank of the matrix with those rows removed (padded eval
      batches).

  Returns:
    int32 rank; ``-1`` when ``x`` holds NaN or Inf, or (under ``jit``) when a
    tolerance is negative or NaN. Eagerly, such a tolerance raises ``ValueError``.
  """
  checks.tolerance('atol', atol)
  checks.tolerance('rtol', rtol)
  return _numerical_rank(x, atol, rtol, row_mask)


@jax.jit
@placement.replicate_inputs
def _numerical_rank(x, atol, rtol, row_mask):
  input_dtype = jnp.asarray(x).dtype
  x = numerics.as_inexact(x)
  m, n = x.shape[-2], x.shape[-1]
  rows = m
  if row_mask is not None:
    x = jnp.where(row_mask[..., :, None], x, jnp.zeros_like(x))
    rows = jnp.sum(row_mask.astype(jnp.int32), axis=-1)
  unit, e, finite = rank_rule.unit_matrix(x)
  s = rank_rule.svdvals(unit, finite)
  valid = finite & checks.tolerance_ok(atol) & checks.tolerance_ok(rtol)
  if atol is None and rtol is None:
    norms = rank_rule.line_norms(unit) if rank_rule.is_low_precision(input_dtype) else None
    tol = rank_rule.default_tolerance(s, (rows, n), input_dtype, norms, log2_unit=e)
  else:
    if atol is not None:  # the absolute threshold, in the units of x / 2**e
      atol = numerics.ldexp(jnp.asarray(atol, s.dtype), -e)
    tol = rank_tolerance(s, (rows, n), atol=atol, rtol=rtol)
  rank = jnp.sum(s > tol[..., None], axis=-1).astype(jnp.int32)
  return jnp.where(valid, rank, INVALID_RANK)


@jax.jit
@placement.replicate_inputs
def effective_rank(x: jax.Array) -> jax.Array:
  """Roy & Vetterli (2007) effective rank ``exp(H(p))``, ``p_i = sigma_i / sum_j sigma_j``.

  ``H(p) = -sum_i p_i log p_i`` (with ``0 log 0 = 0``). Lies in ``[1, min(m, n)]`` for a
  non-zero matrix; 0 for the zero matrix; NaN for non-finite input. Scale-invariant;
  complex input uses the singular values of the complex matrix.
  """
  s, _ = _unit_singular_values(x)
  return rank_rule.effective_rank_of_singular_values(s)


@jax.jit
@placement.replicate_inputs
def stable_rank(x: jax.Array) -> jax.Array:
  """Stable rank ``||X||_F^2 / sigma_1(X)^2 = sum_i sigma_i^2 / sigma_1^2`` (0 for X = 0).

  Scale-invariant (computed on ``x / 2**e``); complex input as in ``singular_values``;
  NaN for non-finite input.
  """
  s, _ = _unit_singular_values(x)
  top = s[..., 0] ** 2
  ratio = jnp.sum(s**2, axis=-1) / jnp.where(top > 0, top, 1.0)
  return jnp.where(top > 0, ratio, jnp.where(jnp.isnan(top), jnp.nan, 0.0))


@functools.partial(jax.jit, static_argnames=('k',))
@placement.replicate_inputs
def top_k_singular_values(x: jax.Array, k: int) -> jax.Array:
  """The ``k`` largest singular values ``[..., k]`` (zero-padded if ``min(m, n) < k``),
  in the units of ``x`` (complex input as in ``singular_values``)."""
  s = singular_values(x)
  have = s.shape[-1]
  if have >= k:
    return s[..., :k]
  pad = [(0, 0)] * (s.ndim - 1) + [(0, k - have)]
  return jnp.pad(s, pad)


@jax.jit
@placement.replicate_inputs
def logits_norm(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Frobenius norm ``||M||_F`` of the logits matrix ``M [n, c]`` (masked rows dropped).

  Computed as ``max|M| * ||M / max|M|||_F``, so |M| ~ 1e30 does not overflow. Complex
  logits raise ``ValueError``.
  """
  m = numerics.as_float(logits, 'logits')
  if mask is not None:
    m = jnp.where(mask[..., None], m, 0.0)
  return numerics.norm(m, axis=(-2, -1))


@jax.jit
@placement.replicate_inputs
def mean_per_sample_norm(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean per-sample L2 norm ``(1/n) sum_i ||M_i||_2`` (independent of n; real logits)."""
  m = numerics.as_float(logits, 'logits')
  norms = numerics.norm(m, axis=-1)
  if mask is None:
    return jnp.mean(norms, axis=-1)
  w = mask.astype(norms.dtype)
  return jnp.sum(norms * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)


def softmax_rank(
  logits: jax.Array,
  temperature: float | jax.Array = 1.0,
  *,
  atol: float | jax.Array | None = None,
  rtol: float | jax.Array | None = None,
  row_mask: jax.Array | None = None,
) -> jax.Array:
  """Post-softmax rank ``rank(softmax(M / T))`` (row-wise softmax over classes).

  Masked rows are removed (a padded row would otherwise become a uniform
  probability row and could add one to the rank). ``temperature`` must be > 0: a
  ``ValueError`` eagerly, rank ``-1`` under ``jit``. Complex logits raise ``ValueError``
  (also under ``jit``). The default tolerance uses the eps of the probabilities' dtype
  (float32; float64 under x64).
  """
  checks.real('logits', logits)
  checks.positive('temperature', temperature)
  checks.tolerance('atol', atol)
  checks.tolerance('rtol', rtol)
  return _softmax_rank(logits, temperature, atol, rtol, row_mask)


@jax.jit
@placement.replicate_inputs
def _softmax_rank(logits, temperature, atol, rtol, row_mask):
  probs = jax.nn.softmax(numerics.as_float(logits, 'logits') / temperature, axis=-1)
  rank = _numerical_rank(probs, atol, rtol, row_mask)
  return jnp.where(jnp.asarray(temperature) > 0, rank, INVALID_RANK)


def flatten_features(reps: jax.Array) -> jax.Array:
  """``[n, ...] -> [n, d]``: flatten conv maps ``[n, h, w, c]`` / tokens ``[n, t, c]``."""
  return jnp.reshape(reps, (reps.shape[0], -1))


def feature_subset_indices(num_features: int, max_dims: int, key: jax.Array) -> jax.Array:
  """Fixed random subset of ``min(num_features, max_dims)`` feature coordinates.

  Sorted indices drawn without replacement with ``jax.random.choice(key, ...)``; the
  same ``key`` always selects the same coordinates (keep it fixed across a run so
  the rank curve is comparable step to step). All coordinates when
  ``num_features <= max_dims``. Under ``jit`` the draw is part of the program (a
  sort-based shuffle: slow to compile); ``seeded_subset_indices`` draws on the host.
  """
  if num_features <= max_dims:
    return jnp.arange(num_features)
  idx = jax.random.choice(key, num_features, (max_dims,), replace=False)
  return jnp.sort(idx)


def seeded_subset_indices(
  num_features: int, max_dims: int, seed: int | Sequence[int]
) -> np.ndarray:
  """Host (numpy) twin of ``feature_subset_indices``: sorted int32 indices of a fixed
  random subset of ``min(num_features, max_dims)`` coordinates out of ``num_features``.

  The ``max_dims`` positions with the smallest of ``num_features`` raw 64-bit PCG64
  draws, the generator seeded by ``np.random.SeedSequence(seed)`` (``seed``: an int or
  a sequence of non-negative ints). Both algorithms are fixed by numpy's stream
  policy, so the subset depends only on ``(num_features, max_dims, seed)``: the same in
  every process, numpy version and platform. Pass the result as ``indices=`` to
  ``representation_matrix`` / ``representation_rank`` / ``alignment.subsample_rows``:
  a jitted program then only gathers (no random draw to compile).
  """
  if num_features <= max_dims:
    return np.arange(num_features, dtype=np.int32)
  bits = np.random.PCG64(np.random.SeedSequence(seed)).random_raw(num_features)
  return np.sort(np.argsort(bits, kind='stable')[:max_dims]).astype(np.int32)


def representation_matrix(
  reps: jax.Array,
  *,
  max_dims: int = 10_000,
  key: jax.Array | None = None,
  indices: jax.Array | np.ndarray | None = None,
) -> jax.Array:
  """``[n, d']`` matrix of a layer's representation: flattened, at most ``max_dims``
  coordinates (a fixed random subset chosen by ``feature_subset_indices``).

  ``indices`` (e.g. from ``seeded_subset_indices``) gives the coordinates to keep
  instead (then ``key`` and ``max_dims`` are ignored)."""
  a = flatten_features(reps)
  if indices is not None:
    return jnp.take(a, jnp.asarray(indices), axis=1)
  d = a.shape[1]
  if d <= max_dims:
    return a
  if key is None:
    key = jax.random.PRNGKey(0)
  return jnp.take(a, feature_subset_indices(d, max_dims, key), axis=1)


def representation_rank(
  reps: jax.Array,
  *,
  max_dims: int = 10_000,
  key: jax.Array | None = None,
  indices: jax.Array | np.ndarray | None = None,
  atol: float | jax.Array | None = None,
  rtol: float | jax.Array | None = None,
  row_mask: jax.Array | None = None,
) -> jax.Array:
  """Numerical rank of a layer representation ``[n, ...]`` (see ``representation_matrix``).

  ``key`` defaults to ``PRNGKey(0)`` (only used when the layer has more than
  ``max_dims`` coordinates); ``indices`` replaces the random subset by given
  coordinates. Tolerances as in ``numerical_rank``.
  """
  checks.tolerance('atol', atol)
  checks.tolerance('rtol', rtol)
  return _representation_rank(reps, max_dims, key, indices, atol, rtol, row_mask)


@functools.partial(jax.jit, static_argnums=(1,))
@placement.replicate_inputs
def _representation_rank(reps, max_dims, key, indices, atol, rtol, row_mask):
  a = representation_matrix(reps, max_dims=max_dims, key=key, indices=indices)
  return _numerical_rank(a, atol, rtol, row_mask)
