"""Spectral metrics against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rankdeficit import metrics

RNG = np.random.default_rng(0)


def _low_rank(m, n, k, rng=RNG):
  return (rng.standard_normal((m, k)) @ rng.standard_normal((k, n))).astype(np.float32)


def _np_rank_default(x):
  """PyTorch default rule with float32 eps, on float64 singular values."""
  s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
  tol = s.max() * max(x.shape) * np.finfo(np.float32).eps if s.size else 0.0
  return int(np.sum(s > tol))


@pytest.mark.parametrize(
  'shape,k', [((60, 40), 7), ((40, 60), 7), ((128, 32), 1), ((30, 30), 30), ((5, 200), 3)]
)
def test_rank_of_low_rank_products_matches_numpy(shape, k):
  x = _low_rank(*shape, k)
  assert int(metrics.numerical_rank(x)) == k == np.linalg.matrix_rank(x)
  assert int(metrics.numerical_rank(x)) == _np_rank_default(x)


def test_ill_conditioned_matrix():
  u, _ = np.linalg.qr(RNG.standard_normal((50, 50)))
  v, _ = np.linalg.qr(RNG.standard_normal((40, 40)))
  s = np.logspace(0, -12, 40)
  x = (u[:, :40] * s) @ v.T
  # float32 default tol = 50 * 1.19e-7 ~ 6e-6: singular values 1 .. 1e-5 survive.
  expected = int(np.sum(s > 50 * np.finfo(np.float32).eps))
  assert abs(int(metrics.numerical_rank(x.astype(np.float32))) - expected) <= 1
  np.testing.assert_allclose(
    np.asarray(metrics.singular_values(x.astype(np.float32)))[:5], s[:5], rtol=1e-5
  )


def test_all_zero_and_one_by_one():
  assert int(metrics.numerical_rank(jnp.zeros((7, 3)))) == 0
  assert int(metrics.numerical_rank(jnp.ones((1, 1)))) == 1
  assert int(metrics.numerical_rank(jnp.zeros((1, 1)))) == 0
  assert float(metrics.effective_rank(jnp.zeros((4, 4)))) == 0.0
  assert float(metrics.stable_rank(jnp.zeros((4, 4)))) == 0.0


def test_atol_rtol_semantics():
  x = np.diag([10.0, 1.0, 0.1, 0.01]).astype(np.float32)
  assert int(metrics.numerical_rank(x, atol=0.5)) == 2
  assert int(metrics.numerical_rank(x, rtol=0.05)) == 2  # tol = 0.5
  # tol = max(atol, rtol * sigma_1): atol wins when larger
  assert int(metrics.numerical_rank(x, atol=5.0, rtol=0.001)) == 1
  assert int(metrics.numerical_rank(x, atol=0.001, rtol=0.05)) == 2
  # rtol is RELATIVE (unlike jnp.linalg.matrix_rank's): scaling x changes nothing
  assert int(metrics.numerical_rank(1e6 * x, rtol=0.05)) == 2


def test_rtol_small_value():
  x = np.diag([10.0, 1.0, 0.1, 0.01]).astype(np.float32)
  assert int(metrics.numerical_rank(x, rtol=0.005)) == 3  # tol = 0.05


def test_nan_and_inf_never_give_a_plausible_rank():
  x = _low_rank(20, 10, 3)
  for bad in (np.nan, np.inf):
    y = x.copy()
    y[3, 4] = bad
    assert int(metrics.numerical_rank(y)) == metrics.INVALID_RANK == -1
    assert np.isnan(float(metrics.effective_rank(y)))
    assert np.isnan(float(metrics.stable_rank(y)))
    assert np.all(np.isnan(np.asarray(metrics.singular_values(y))))


def test_vmap_and_jit_over_batch():
  xs = np.stack([_low_rank(30, 20, k) for k in (1, 2, 5, 20)])
  ranks = jax.jit(jax.vmap(metrics.numerical_rank))(xs)
  np.testing.assert_array_equal(np.asarray(ranks), [1, 2, 5, 20])
  np.testing.assert_array_equal(np.asarray(metrics.numerical_rank(xs)), [1, 2, 5, 20])
  xs[2, 0, 0] = np.nan
  np.testing.assert_array_equal(np.asarray(metrics.numerical_rank(xs)), [1, 2, -1, 20])


def test_bf16_input_is_cast_up():
  x = _low_rank(64, 32, 4)
  r = metrics.numerical_rank(jnp.asarray(x, jnp.bfloat16))
  assert r.dtype == jnp.int32
  # bf16 rounding adds tiny full-rank noise; the default tolerance uses bf16's eps,
  # so the noise is not counted as rank (test_invalid_input checks the rule itself).
  assert int(r) == 4
  assert metrics.singular_values(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.float32


def test_effective_and_stable_rank_and_top_k():
  x = np.diag([3.0, 2.0, 1.0, 0.0]).astype(np.float32)
  p = np.array([3, 2, 1]) / 6
  np.testing.assert_allclose(
    float(metrics.effective_rank(x)), np.exp(-np.sum(p * np.log(p))), rtol=1e-5
  )
  np.testing.assert_allclose(float(metrics.stable_rank(x)), 14 / 9, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(metrics.top_k_singular_values(x, 2)), [3, 2])
  np.testing.assert_allclose(np.asarray(metrics.top_k_singular_values(x, 6)), [3, 2, 1, 0, 0, 0])
  assert float(metrics.effective_rank(np.eye(5, dtype=np.float32))) == pytest.approx(5.0, rel=1e-5)


def test_logits_norms_and_softmax_rank():
  m = RNG.standard_normal((16, 5)).astype(np.float32)
  assert float(metrics.logits_norm(m)) == pytest.approx(np.linalg.norm(m), rel=1e-5)
  assert float(metrics.mean_per_sample_norm(m)) == pytest.approx(
    np.linalg.norm(m, axis=1).mean(), rel=1e-5
  )
  # rank-1 logits, large scale -> near one-hot rows -> full post-softmax rank
  a = RNG.uniform(-1, 1, (16, 1)).astype(np.float32)
  b = np.arange(5, dtype=np.float32)[None, :] - 2
  logits = a @ b
  assert int(metrics.numerical_rank(logits)) == 1
  probs = jax.nn.softmax(logits * 10.0, axis=-1)
  assert int(metrics.softmax_rank(logits, 0.1)) == np.linalg.matrix_rank(
    np.asarray(probs, np.float64)
  )
  # masks: padded rows must not change anything
  padded = np.concatenate([logits, np.zeros((4, 5), np.float32)])
  mask = np.r_[np.ones(16, bool), np.zeros(4, bool)]
  assert int(metrics.softmax_rank(padded, 0.1, row_mask=mask)) == int(
    metrics.softmax_rank(logits, 0.1)
  )
  assert float(metrics.logits_norm(padded, mask)) == pytest.approx(
    float(metrics.logits_norm(logits))
  )


def test_representation_rank_subset_is_fixed_and_flattens():
  reps = np.einsum('nk,khwc->nhwc', RNG.standard_normal((40, 3)), RNG.standard_normal((3, 8, 8, 4)))
  reps = reps.astype(np.float32)
  key = jax.random.PRNGKey(3)
  assert int(metrics.representation_rank(reps, max_dims=100, key=key)) == 3
  idx1 = metrics.feature_subset_indices(256, 100, key)
  idx2 = metrics.feature_subset_indices(256, 100, key)
  np.testing.assert_array_equal(idx1, idx2)
  assert len(np.unique(np.asarray(idx1))) == 100
  assert metrics.representation_matrix(reps, max_dims=100, key=key).shape == (40, 100)
  assert metrics.representation_matrix(reps, max_dims=1000).shape == (40, 256)


@pytest.mark.parametrize('num,max_dims', [(1000, 37), (64, 64), (10, 100)])
def test_seeded_subset_indices_are_a_fixed_sorted_subset(num, max_dims):
  idx = metrics.seeded_subset_indices(num, max_dims, (3, 7))
  assert idx.dtype == np.int32 and len(idx) == min(num, max_dims)
  assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < num
  np.testing.assert_array_equal(idx, metrics.seeded_subset_indices(num, max_dims, [3, 7]))
  if num > max_dims:
    assert not np.array_equal(idx, metrics.seeded_subset_indices(num, max_dims, (3, 8)))
  else:
    np.testing.assert_array_equal(idx, np.arange(num))


def test_seeded_subset_indices_are_uniform():
  # Each of 20 coordinates is kept with probability 5/20 over 2000 seeds: counts ~ 500.
  counts = np.zeros(20)
  for seed in range(2000):
    counts[metrics.seeded_subset_indices(20, 5, seed)] += 1
  assert np.all(np.abs(counts - 500) < 5 * np.sqrt(2000 * 0.25 * 0.75))


def test_given_indices_replace_the_key_draw():
  reps = RNG.standard_normal((30, 4, 4, 8)).astype(np.float32)
  key = jax.random.PRNGKey(5)
  idx = metrics.feature_subset_indices(128, 40, key)
  by_key = metrics.representation_matrix(reps, max_dims=40, key=key)
  by_indices = metrics.representation_matrix(reps, indices=np.asarray(idx))
  np.testing.assert_array_equal(by_indices, by_key)
  np.testing.assert_array_equal(by_indices, reps.reshape(30, -1)[:, np.asarray(idx)])
  assert (
    int(metrics.representation_rank(reps, max_dims=40, key=key))
    == int(metrics.representation_rank(reps, indices=idx))
    == _np_rank_default(reps.reshape(30, -1)[:, np.asarray(idx)])
  )
  # indices are an ordinary traced argument: jit and vmap see one program
  ranks = jax.jit(jax.vmap(lambda r, i: metrics.representation_rank(r, indices=i)))(
    np.stack([reps, reps]), np.stack([idx, idx[::-1]])
  )
  assert ranks.tolist() == [int(metrics.representation_rank(reps, indices=idx))] * 2


def _np_effective_rank(x):
  s = np.linalg.svd(x, compute_uv=False)
  p = s[s > 0] / s.sum()
  return float(np.exp(-np.sum(p * np.log(p))))


def _np_stable_rank(x):
  s = np.linalg.svd(x, compute_uv=False)
  return float(np.sum(s**2) / s[0] ** 2)


def _product(rng, m, n, k, row_scale=None):
  """float64 ``m x n`` product of Gaussian ``m x k`` and ``k x n`` factors (rank ``k``)."""
  a = rng.standard_normal((m, k))
  if row_scale is not None:
    a = a * row_scale(rng, m)[:, None]
  return a @ rng.standard_normal((k, n))


LOW_PRECISION_CASES = {
  '300x40 rank 3': lambda rng: _product(rng, 300, 40, 3),
  '40x300 rank 3': lambda rng: _product(rng, 40, 300, 3),
  '1000x256 rank 17': lambda rng: _product(rng, 1000, 256, 17),
  '512x512 rank 50': lambda rng: _product(rng, 512, 512, 50),
  '128x16 rank 2': lambda rng: _product(rng, 128, 16, 2),
  '64x32 rank 4': lambda rng: _product(rng, 64, 32, 4),
  '300x40 full rank': lambda rng: rng.standard_normal((300, 40)),
  # uneven magnitudes: lognormal row scales; one row 100x the others
  '600x100 rank 3 lognormal rows': lambda rng: _product(
    rng, 600, 100, 3, lambda r, m: r.lognormal(0.0, 1.0, m)
  ),
  '500x100 rank 2 one big row': lambda rng: _product(
    rng, 500, 100, 2, lambda r, m: np.r_[100.0, np.ones(m - 1)]
  ),
}


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16], ids=['bf16', 'f16'])
@pytest.mark.parametrize('case', list(LOW_PRECISION_CASES))
def test_low_precision_rank_is_the_float64_rank_of_the_unrounded_matrix(case, dtype):
  # Before: tol = sigma_1 * max(m, n) * eps(dtype) >= sigma_1 once max(m, n) >= 1/eps
  # (bf16: 128), so every bf16 matrix of 128+ rows had rank 0.
  x = LOW_PRECISION_CASES[case](np.random.default_rng(7))
  want = int(np.linalg.matrix_rank(x))  # float64, unrounded
  assert int(metrics.numerical_rank(jnp.asarray(x, dtype))) == want


def test_low_precision_rank_under_jit_and_vmap():
  rng = np.random.default_rng(8)
  xs = jnp.asarray(np.stack([_product(rng, 200, 30, k) for k in (1, 2, 3, 30)]), jnp.bfloat16)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(jax.vmap(metrics.numerical_rank))(xs)), [1, 2, 3, 30]
  )
  mask = np.arange(200) < 150  # padded rows: the rank of the first 150 rows
  ranks = jax.jit(lambda x: metrics.numerical_rank(x, row_mask=mask))(xs)
  np.testing.assert_array_equal(np.asarray(ranks), [1, 2, 3, 30])


def test_rank_is_scale_invariant_down_to_subnormal_input():
  rng = np.random.default_rng(9)
  x64 = _product(rng, 20, 10, 3)
  tiny = x64.astype(np.float32) * np.float32(1e-40)
  assert 0 < np.abs(tiny).max() < np.finfo(np.float32).tiny  # every entry is subnormal
  # Before: rank 0 (XLA's CPU flushes subnormals to zero, so x / max|x| was 0).
  assert int(metrics.numerical_rank(tiny)) == np.linalg.matrix_rank(x64) == 3
  assert int(jax.jit(metrics.numerical_rank)(tiny)) == 3
  assert int(metrics.numerical_rank(tiny, rtol=1e-3)) == 3
  assert int(metrics.numerical_rank(jnp.asarray(x64 * 1e-6, jnp.float16))) == 3  # f16 subnormals
  # the rounded subnormal entries keep ~17 significant bits: close to the float64 values
  np.testing.assert_allclose(
    float(metrics.effective_rank(tiny)), _np_effective_rank(x64), rtol=1e-4
  )
  np.testing.assert_allclose(float(metrics.stable_rank(tiny)), _np_stable_rank(x64), rtol=1e-4)
  # singular values stay in the units of x (normal range: 1e-30)
  small = (x64 * 1e-30).astype(np.float32)
  s = np.linalg.svd(small.astype(np.float64), compute_uv=False)
  np.testing.assert_allclose(
    np.asarray(metrics.top_k_singular_values(small, 4)), s[:4], rtol=1e-5, atol=1e-5 * s[0]
  )
  np.testing.assert_allclose(
    np.asarray(metrics.singular_values(small)), s, rtol=1e-5, atol=1e-5 * s[0]
  )


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64])
def test_all_zero_matrix_has_rank_zero_in_every_dtype(dtype):
  z = jnp.zeros((300, 40), dtype)
  assert int(metrics.numerical_rank(z)) == 0
  assert int(jax.jit(metrics.numerical_rank)(z)) == 0
  assert float(metrics.effective_rank(z)) == 0.0 and float(metrics.stable_rank(z)) == 0.0
  np.testing.assert_array_equal(np.asarray(metrics.top_k_singular_values(z, 3)), 0.0)


def test_complex_input_is_the_svd_of_the_complex_matrix():
  rng = np.random.default_rng(10)
  a = rng.standard_normal((30, 4)) + 1j * rng.standard_normal((30, 4))
  x = a @ (rng.standard_normal((4, 12)) + 1j * rng.standard_normal((4, 12)))
  assert np.linalg.matrix_rank(x) == 4 and np.linalg.matrix_rank(x.real) == 8
  xc = x.astype(np.complex64)
  # Before: the imaginary part was dropped (rank 8 here; a purely imaginary matrix: 0).
  assert int(metrics.numerical_rank(xc)) == 4
  assert int(metrics.numerical_rank(1j * _product(rng, 30, 12, 4))) == 4
  s = np.linalg.svd(x, compute_uv=False)
  got = metrics.singular_values(xc)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), s, rtol=1e-5, atol=1e-5 * s[0])
  np.testing.assert_allclose(
    np.asarray(metrics.top_k_singular_values(xc, 5)), s[:5], rtol=1e-5, atol=1e-5 * s[0]
  )
  np.testing.assert_allclose(float(metrics.effective_rank(xc)), _np_effective_rank(x), rtol=1e-4)
  np.testing.assert_allclose(float(metrics.stable_rank(xc)), _np_stable_rank(x), rtol=1e-5)
  np.testing.assert_allclose(float(metrics.stable_rank(1e30 * xc)), _np_stable_rank(x), rtol=1e-5)
  xs = np.stack([1j * _product(rng, 20, 10, k) for k in (1, 2, 5)]).astype(np.complex64)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(jax.vmap(metrics.numerical_rank))(xs)), [1, 2, 5]
  )
  xs[1, 0, 0] = complex(0, np.nan)
  np.testing.assert_array_equal(np.asarray(metrics.numerical_rank(xs)), [1, -1, 5])
  assert np.isnan(float(metrics.effective_rank(xs[1])))
