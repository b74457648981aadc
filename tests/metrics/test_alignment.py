"""Alignment, conv patches ordering and gradient rank."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rankdeficit import metrics

RNG = np.random.default_rng(1)


@pytest.mark.parametrize(
  'strides,padding,dilation',
  [(1, 'SAME', 1), (2, 'VALID', 1), ((2, 1), [(1, 2), (0, 1)], 1), (1, 'SAME', 2)],
)
def test_patches_times_reshaped_kernel_equals_conv(strides, padding, dilation):
  x = RNG.standard_normal((2, 9, 8, 3)).astype(np.float32)
  kernel = RNG.standard_normal((3, 2, 3, 5)).astype(np.float32)
  conv = nn.Conv(
    5, (3, 2), strides=strides, padding=padding, kernel_dilation=dilation, use_bias=False
  )
  y = conv.apply({'params': {'kernel': kernel}}, x)
  a = metrics.conv_patches(x, (3, 2), strides=strides, padding=padding, kernel_dilation=dilation)
  w = metrics.kernel_as_matrix(kernel)  # cout x (kh*kw*cin)
  assert w.shape == (5, 18) and a.shape == (int(np.prod(y.shape[:3])), 18)
  y2 = jnp.matmul(a, w.T, precision='highest').reshape(y.shape)
  np.testing.assert_allclose(np.asarray(y2), np.asarray(y), rtol=1e-4, atol=1e-4)


def test_dense_kernel_as_matrix_is_out_by_in():
  kernel = RNG.standard_normal((7, 3)).astype(np.float32)  # flax [in, out]
  np.testing.assert_array_equal(np.asarray(metrics.kernel_as_matrix(kernel)), kernel.T)


def test_alignment_with_inputs_built_from_weight_singular_vectors():
  k, d_in, d_out, n = 5, 20, 12, 200
  w = RNG.standard_normal((d_out, d_in)).astype(np.float64)
  _, _, vt = np.linalg.svd(w)
  # inputs whose feature-space singular vectors are W's right singular vectors, in order
  coeffs = RNG.standard_normal((n, d_in))
  coeffs, _ = np.linalg.qr(coeffs)  # orthonormal columns
  scales = np.geomspace(100, 1, d_in)
  a = (coeffs * scales) @ vt
  c = np.asarray(metrics.singular_vector_alignment(w.astype(np.float32), a.astype(np.float32), k))
  assert c.shape == (k, k)
  np.testing.assert_allclose(np.diag(c), 1.0, atol=1e-4)
  np.testing.assert_allclose(c - np.diag(np.diag(c)), 0.0, atol=1e-3)
  assert float(metrics.max_alignment(c)) == pytest.approx(1.0, abs=1e-4)


def test_alignment_of_random_inputs_is_small_and_matches_numpy():
  w = RNG.standard_normal((30, 400)).astype(np.float32)
  a = RNG.standard_normal((100, 400)).astype(np.float32)
  c = np.asarray(metrics.singular_vector_alignment(w, a, 15))
  _, _, vw = np.linalg.svd(w.astype(np.float64), full_matrices=False)
  _, _, va = np.linalg.svd(a.astype(np.float64), full_matrices=False)
  np.testing.assert_allclose(c, np.abs(vw[:15] @ va[:15].T), atol=2e-3)
  assert c.max() < 0.5


def test_alignment_pads_when_fewer_than_k_vectors():
  c = metrics.singular_vector_alignment(jnp.eye(3, 6), jnp.eye(6)[:4], 15)
  assert c.shape == (15, 15) and float(c[3:].max()) == 0.0


def test_mean_max_alignment():
  mats = {'a': jnp.eye(3) * 0.5, 'b': jnp.ones((3, 3))}
  assert float(metrics.mean_max_alignment(mats)) == pytest.approx(0.75)


def test_gradient_rank_of_dense_and_conv():
  # Dense grad = x^T delta: rank <= batch size
  x = RNG.standard_normal((3, 50)).astype(np.float32)
  delta = RNG.standard_normal((3, 40)).astype(np.float32)
  assert int(metrics.gradient_rank(x.T @ delta)) == 3
  g = RNG.standard_normal((3, 3, 4, 2)).astype(np.float32)
  assert int(metrics.gradient_rank(g)) == 2


def test_subsample_rows_with_given_indices_matches_the_key_draw():
  a = RNG.standard_normal((200, 6)).astype(np.float32)
  key = jax.random.PRNGKey(4)
  by_key = metrics.subsample_rows(a, 50, key)
  idx = np.sort(np.asarray(jax.random.choice(key, 200, (50,), replace=False)))
  np.testing.assert_array_equal(metrics.subsample_rows(a, 50, indices=idx), by_key)
  np.testing.assert_array_equal(by_key, a[idx])
  host = metrics.seeded_subset_indices(200, 50, 4)
  np.testing.assert_array_equal(
    jax.jit(lambda x, i: metrics.subsample_rows(x, None, indices=i))(a, host), a[host]
  )
  np.testing.assert_array_equal(metrics.subsample_rows(a, 500, key), a)  # under the limit
