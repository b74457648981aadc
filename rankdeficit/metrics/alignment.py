"""Singular-vector alignment between a layer's weights and its input (paper Fig. 3/10),
and the rank of a layer's gradient (paper Fig. 4).

Conventions (stated once, used everywhere):

* Weight matrix ``W`` is ``out x in`` (PyTorch layout). A Flax ``nn.Dense`` kernel is
  ``[in, out]`` so ``W = kernel.T``. A Flax ``nn.Conv`` kernel ``[kh, kw, cin, cout]``
  becomes ``W = kernel.reshape(kh * kw * cin, cout).T`` -- i.e. the input coordinate
  index is ``(i * kw + j) * cin + c`` (row-major over ``(kh, kw, cin)``).
* The layer input ``A`` is ``n x d`` (rows are samples; ``d = in``). For a Dense layer
  applied to ``[..., in]`` inputs every leading position is a row. For a Conv layer the
  rows are the image patches, ``A = conv_patches(x, ...)`` with the coordinates ordered
  ``(i, j, c)`` exactly like the reshaped kernel, so that
  ``conv(x, kernel) == (A @ kernel.reshape(-1, cout)).reshape(N, H', W', cout)``.
* Alignment: with ``W = U_W S_W V_W^T`` and ``A = U_A S_A V_A^T`` (thin SVDs), the
  feature-space singular vectors of ``A`` are the columns of ``V_A`` (in ``R^d``; the
  "left singular vectors of ``A^T``", i.e. of the ``d x n`` representation matrix the
  paper writes). The alignment matrix is

      C[i, j] = | <v_i(W), v_j(A)> |,   i, j = 1..k   (k = 15 in the paper),

  rows indexed by W's right singular vectors, columns by A's, both unit vectors, so each
  entry is an absolute cosine in ``[0, 1]`` (singular vectors are defined up to sign).
  ``A`` is not centred. The top-k vectors come from ``eigh`` of the smaller Gram matrix
  (see ``top_right_singular_vectors``). The paper reports ``max_ij C[i, j]`` averaged over layers.
* NaN/Inf in ``W`` or ``A`` gives a NaN alignment. Inputs sharded over an Explicit mesh
  are replicated first (``placement``; conv patches are ``kh*kw`` times the image size).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.metrics import numerics
from rankdeficit.metrics import placement
from rankdeficit.metrics import spectral

__all__ = [
  'kernel_as_matrix',
  'conv_patches',
  'layer_input_matrix',
  'top_right_singular_vectors',
  'singular_vector_alignment',
  'max_alignment',
  'mean_max_alignment',
  'gradient_rank',
  'subsample_rows',
]

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def kernel_as_matrix(kernel: jax.Array) -> jax.Array:
  """Weight matrix ``W`` (``out x in``) of a Dense ``[in, out]`` or Conv
  ``[kh, kw, cin, cout]`` kernel: ``kernel.reshape(-1, out).T``."""
  kernel = placement.replicated(jnp.asarray(kernel))
  return jnp.reshape(kernel, (-1, kernel.shape[-1])).T


def _canonical_padding(padding: Padding, ndim: int):
  if isinstance(padding, str):
    up = padding.upper()
    if up not in ('SAME', 'VALID'):
      raise ValueError(f'conv_patches supports SAME/VALID/explicit padding, got {padding!r}')
    return up
  if isinstance(padding, int):
    return [(padding, padding)] * ndim
  pads = list(padding)
  if all(isinstance(p, int) for p in pads):
    return [(p, p) for p in pads]
  return [tuple(p) for p in pads]


def conv_patches(
  x: jax.Array,
  kernel_size: Sequence[int],
  *,
  strides: Sequence[int] | int | None = 1,
  padding: Padding = 'SAME',
  kernel_dilation: Sequence[int] | int | None = 1,
  input_dilation: Sequence[int] | int | None = 1,
) -> jax.Array:
  """Image patches of an NHWC input as the ``n x d`` input matrix of a 2-D conv.

  Returns ``[N * H' * W', kh * kw * cin]`` with the coordinate ordering ``(i, j, c)``
  (row-major), matching ``kernel_as_matrix``. ``jax.lax.conv_general_dilated_patches``
  orders the patch coordinates channel-major ``(c, i, j)``; they are transposed here.
  """
  x = placement.replicated(jnp.asarray(x))
  kh, kw = kernel_size
  as_pair = lambda v: (1, 1) if v is None else ((v, v) if isinstance(v, int) else tuple(v))
  cin = x.shape[-1]
  patches = jax.lax.conv_general_dilated_patches(
    x,
    filter_shape=(kh, kw),
    window_strides=as_pair(strides),
    padding=_canonical_padding(padding, 2),
    lhs_dilation=as_pair(input_dilation),
    rhs_dilation=as_pair(kernel_dilation),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    precision=jax.lax.Precision.HIGHEST,
  )
  n, ho, wo, _ = patches.shape
  patches = patches.reshape(n, ho, wo, cin, kh * kw)
  patches = jnp.swapaxes(patches, -1, -2)  # (kh*kw, cin) ordering
  return patches.reshape(n * ho * wo, kh * kw * cin)


def layer_input_matrix(layer_input: jax.Array, in_features: int) -> jax.Array:
  """Dense-layer input ``[..., in]`` as ``[rows, in]`` (every leading position a row)."""
  return jnp.reshape(layer_input, (-1, in_features))


def subsample_rows(
  a: jax.Array,
  max_rows: int | None,
  key: jax.Array | None = None,
  *,
  indices: jax.Array | np.ndarray | None = None,
) -> jax.Array:
  """At most ``max_rows`` rows of ``a`` (a fixed random subset from ``key``).

  ``indices`` (e.g. ``spectral.seeded_subset_indices(len(a), max_rows, seed)``) gives
  the rows to keep instead, so a jitted program only gathers (``key`` and ``max_rows``
  are then ignored). Drawn from ``key`` under ``jit``, the subset is a sort-based
  shuffle inside the program, slow to compile.
  """
  if indices is not None:
    return jnp.take(placement.replicated(a), jnp.asarray(indices), axis=0)
  if max_rows is None or a.shape[0] <= max_rows:
    return a
  key = jax.random.PRNGKey(0) if key is None else key
  a = placement.replicated(a)
  idx = jnp.sort(jax.random.choice(key, a.shape[0], (max_rows,), replace=False))
  return jnp.take(a, idx, axis=0)


@functools.partial(jax.jit, static_argnames=('k',))
@placement.replicate_inputs
def top_right_singular_vectors(x: jax.Array, k: int) -> jax.Array:
  """Top-``k`` right singular vectors of ``x [m, n]`` as the ROWS of a ``[k, n]`` array
  (zero rows for singular values that are 0 or beyond ``min(m, n)``).

  Computed from ``eigh`` of the SMALLER Gram matrix in float32 at precision HIGHEST:
  ``x^T x = V S^2 V^T`` when ``n <= m``; otherwise ``x x^T = U S^2 U^T`` and
  ``v_i = x^T u_i / ||x^T u_i||``. For the TOP of the spectrum this is as accurate as an
  SVD (eigenvector error ~ eps sigma_1 / (sigma_i - sigma_{i+1}) either way) and ~10x
  faster on CPU than jax's SVD with vectors of a wide matrix. (Ranks never use a Gram
  matrix: that is about the SMALL singular values, see ``spectral``.) Computed on
  ``x / max|x|`` (the vectors are scale-invariant); NaN rows for non-finite input.
  """
  x = numerics.as_float(x)
  finite = numerics.all_finite(x)[..., None, None]
  x = jnp.where(finite, x / numerics.max_abs_scale(x), 0.0)
  m, n = x.shape[-2], x.shape[-1]
  hi = jax.lax.Precision.HIGHEST
  with jax.default_matmul_precision('highest'):
    if n <= m:
      evals, evecs = jnp.linalg.eigh(jnp.matmul(jnp.swapaxes(x, -1, -2), x, precision=hi))
      v = jnp.swapaxes(jnp.flip(evecs, -1), -1, -2)  # rows, descending
      evals = jnp.flip(evals, -1)
    else:
      evals, evecs = jnp.linalg.eigh(jnp.matmul(x, jnp.swapaxes(x, -1, -2), precision=hi))
      u = jnp.flip(evecs, -1)
      evals = jnp.flip(evals, -1)
      v = jnp.swapaxes(jnp.matmul(jnp.swapaxes(x, -1, -2), u, precision=hi), -1, -2)
      v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)
  tol = evals[..., :1] * min(m, n) * jnp.finfo(x.dtype).eps
  v = jnp.where((evals > tol)[..., None], v, 0.0)
  v = jnp.where(finite, v, jnp.nan)
  have = v.shape[-2]
  if have >= k:
    return v[..., :k, :]
  pad = [(0, 0)] * (v.ndim - 2) + [(0, k - have), (0, 0)]
  return jnp.pad(v, pad)


@functools.partial(jax.jit, static_argnames=('k',))
@placement.replicate_inputs
def singular_vector_alignment(weight: jax.Array, inputs: jax.Array, k: int = 15) -> jax.Array:
  """``k x k`` matrix ``|<v_i(W), v_j(A)>|`` (module docstring).

  Args:
    weight: ``W`` as ``out x in``.
    inputs: ``A`` as ``n x in`` (samples/patches as rows).
    k: number of top singular vectors of each.
  """
  if weight.shape[-1] != inputs.shape[-1]:
    raise ValueError(f'W is out x in={weight.shape}, A must be n x in, got {inputs.shape}')
  vw = top_right_singular_vectors(weight, k)
  va = top_right_singular_vectors(inputs, k)
  cos = jnp.matmul(vw, jnp.swapaxes(va, -1, -2), precision=jax.lax.Precision.HIGHEST)
  return jnp.abs(cos)


def max_alignment(alignment: jax.Array) -> jax.Array:
  """``max_ij C[i, j]`` of an alignment matrix ``[..., k, k]``."""
  return jnp.max(alignment, axis=(-2, -1))


def mean_max_alignment(alignments: dict[str, jax.Array] | Sequence[jax.Array]) -> jax.Array:
  """Average over layers of the per-layer maximum alignment (paper Fig. 3, top)."""
  mats = list(alignments.values()) if isinstance(alignments, dict) else list(alignments)
  if not mats:
    return jnp.asarray(jnp.nan, jnp.float32)
  return jnp.mean(jnp.stack([max_alignment(m) for m in mats]))


def gradient_rank(
  grad_kernel: jax.Array,
  *,
  atol: float | jax.Array | None = None,
  rtol: float | jax.Array | None = None,
) -> jax.Array:
  """Numerical rank of ``dL/dW`` for a Dense ``[in, out]`` or Conv ``[kh, kw, cin, cout]``
  kernel gradient, reshaped like ``kernel_as_matrix`` (rank is transpose-invariant).

  Tolerances as in ``spectral.numerical_rank`` (traced; default uses the eps of the
  gradient's dtype).
  """
  return spectral.numerical_rank(kernel_as_matrix(grad_kernel), atol=atol, rtol=rtol)
