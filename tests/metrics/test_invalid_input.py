"""Invalid input never yields a plausible number: errors eagerly, NaN / rank -1 under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rankdeficit import metrics

RNG = np.random.default_rng(11)
OOD_FUNCTIONS = {
  'auroc': metrics.auroc,
  'aupr_in': metrics.aupr_in,
  'aupr_out': metrics.aupr_out,
  'fpr_neco': metrics.fpr_at_95_tpr,
  'fpr_openood': lambda a, b: metrics.fpr_at_95_tpr(a, b, convention='openood'),
}


def _low_rank(m, n, k):
  return (RNG.standard_normal((m, k)) @ RNG.standard_normal((k, n))).astype(np.float32)


def _features(c=4, d=6, per=10):
  labels = np.arange(c * per) % c
  feats = RNG.standard_normal((c * per, d)).astype(np.float32) + 3.0 * labels[:, None]
  return feats, labels


@pytest.mark.parametrize('name', sorted(OOD_FUNCTIONS))
def test_ood_nan_in_nan_out(name):
  fn = OOD_FUNCTIONS[name]
  id_s, ood_s = RNG.normal(1, 1, 40).astype(np.float32), RNG.normal(0, 1, 30).astype(np.float32)
  assert np.isfinite(float(fn(id_s, ood_s)))
  all_nan = np.full_like(id_s, np.nan)
  one_nan = id_s.copy()
  one_nan[5] = np.nan
  for a, b in [(all_nan, ood_s), (one_nan, ood_s), (id_s, one_nan[:30])]:
    assert np.isnan(float(fn(a, b)))
    assert np.isnan(float(jax.jit(fn)(a, b)))


@pytest.mark.parametrize('name', sorted(OOD_FUNCTIONS))
def test_ood_empty_input_is_an_error(name):
  fn = OOD_FUNCTIONS[name]
  scores, empty = np.ones(5, np.float32), np.zeros(0, np.float32)
  for a, b in [(scores, empty), (empty, scores)]:
    with pytest.raises(ValueError, match='empty'):
      fn(a, b)
    with pytest.raises(ValueError, match='empty'):
      jax.jit(fn)(a, b)


def test_neural_collapse_nan_feature_is_nan():
  feats, labels = _features()
  feats[3, 2] = np.nan
  out = metrics.neural_collapse_from_features(feats, labels, 4, classifier=np.ones((4, 6)))
  assert all(np.isnan(float(v)) for v in out.values()), out


def test_labels_outside_range_are_an_error_eagerly_and_nan_under_jit():
  feats, labels = _features()
  labels[7] = 4  # C = 4
  with pytest.raises(ValueError, match=r'\[0, 4\)'):
    metrics.class_stats_from_features(feats, labels, 4)
  stats = metrics.class_stats_update(metrics.class_stats_init(4, 6), feats, labels)
  with pytest.raises(ValueError, match='labels outside'):
    metrics.neural_collapse(stats)
  assert np.isnan(float(jax.jit(metrics.nc1)(stats)))
  labels[7] = -1
  stats = metrics.class_stats_update(metrics.class_stats_init(4, 6), feats, labels)
  assert np.isnan(float(jax.jit(lambda s: metrics.nc2(s)['nc2_equinorm'])(stats)))
  # ...but a masked-out padding row may carry any label
  mask = np.arange(len(labels)) != 7
  stats = metrics.class_stats_from_features(feats, labels, 4, mask)
  assert np.isfinite(float(metrics.nc1(stats)))


def test_empty_class_is_an_error_eagerly_and_nan_under_jit():
  feats, labels = _features()
  stats = metrics.class_stats_from_features(feats, labels, 5)  # class 4 never seen
  with pytest.raises(ValueError, match=r'classes \[4\] have no samples'):
    metrics.neural_collapse(stats)
  out = jax.jit(metrics.neural_collapse)(stats, np.ones((5, 6), np.float32))
  assert all(np.isnan(float(v)) for v in out.values()), out


def test_nc4_with_nan_features_is_nan():
  feats, labels = _features()
  logits = RNG.standard_normal((len(labels), 4)).astype(np.float32)
  feats[0, 0] = np.nan
  ncc = metrics.ncc_update(metrics.ncc_init(), feats, logits, np.ones((4, 6), np.float32))
  assert np.isnan(float(metrics.nc4(ncc)))


@pytest.mark.parametrize('where', ['weight', 'inputs'])
def test_alignment_with_nan_is_nan(where):
  w = RNG.standard_normal((10, 20)).astype(np.float32)
  a = RNG.standard_normal((50, 20)).astype(np.float32)
  (w if where == 'weight' else a)[1, 1] = np.nan
  c = np.asarray(metrics.singular_vector_alignment(w, a, 5))
  assert c.shape == (5, 5) and np.all(np.isnan(c))


@pytest.mark.parametrize(
  'kwargs', [{'atol': -1.0}, {'atol': np.nan}, {'rtol': -0.1}, {'rtol': np.nan}]
)
def test_bad_tolerance_is_an_error_eagerly_and_minus_one_under_jit(kwargs):
  x = _low_rank(20, 10, 3)
  name = next(iter(kwargs))
  for fn in (metrics.numerical_rank, metrics.gradient_rank, metrics.representation_rank):
    with pytest.raises(ValueError, match=name):
      fn(x, **kwargs)
  rank = jax.jit(lambda x, t: metrics.numerical_rank(x, **{name: t}))
  assert int(rank(x, kwargs[name])) == metrics.INVALID_RANK
  assert int(rank(x, 0.01)) == 3


@pytest.mark.parametrize('temperature', [0.0, -1.0, np.nan])
def test_softmax_rank_needs_positive_temperature(temperature):
  logits = RNG.standard_normal((20, 5)).astype(np.float32)
  with pytest.raises(ValueError, match='temperature'):
    metrics.softmax_rank(logits, temperature)
  assert int(jax.jit(metrics.softmax_rank)(logits, temperature)) == metrics.INVALID_RANK


@pytest.mark.parametrize('dim', [0, 7])
def test_neco_fit_dim_out_of_range_is_an_error(dim):
  with pytest.raises(ValueError, match='dim'):
    metrics.neco_fit(RNG.standard_normal((30, 6)).astype(np.float32), dim)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_default_tolerance_of_low_precision_input_bounds_its_rounding_noise(dtype):
  x32 = _low_rank(64, 32, 3)
  x = jnp.asarray(x32, dtype)
  assert int(metrics.numerical_rank(x)) == 3
  # the same rounded matrix in float32 is full rank under float32's eps: the rounding
  # noise is real but not rank
  assert int(metrics.numerical_rank(x.astype(jnp.float32))) > 3
  # float64 reference of the rule: eps(dtype) * (largest row norm + largest column norm)
  x64 = np.asarray(x, np.float64)
  s = np.linalg.svd(x64, compute_uv=False)
  rows, cols = np.linalg.norm(x64, axis=1).max(), np.linalg.norm(x64, axis=0).max()
  want = float(jnp.finfo(dtype).eps) * (rows + cols)
  sigma = metrics.singular_values(x)
  tol = metrics.rank_tolerance(sigma, x.shape, dtype=x.dtype, line_norms=(rows, cols))
  np.testing.assert_allclose(float(tol), want, rtol=1e-4)
  # the rounding noise lies well below it, the rank-3 signal far above
  noise = np.linalg.norm(x64 - x32.astype(np.float64), 2)
  assert noise < want / 3 and s[2] > 10 * want
  # without line norms: their bound sigma_1, so tol = 2 eps sigma_1 (< sigma_1)
  np.testing.assert_allclose(
    float(metrics.rank_tolerance(sigma, x.shape, dtype=x.dtype)),
    2 * float(jnp.finfo(dtype).eps) * s[0],
    rtol=1e-4,
  )


def test_float32_default_tolerance_is_still_pytorchs():
  x = _low_rank(300, 40, 3)
  s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
  tol = metrics.rank_tolerance(metrics.singular_values(x), x.shape)
  np.testing.assert_allclose(float(tol), s[0] * 300 * np.finfo(np.float32).eps, rtol=1e-5)


COMPLEX_REFUSED = {
  'softmax_rank': metrics.softmax_rank,
  'logits_norm': metrics.logits_norm,
  'mean_per_sample_norm': metrics.mean_per_sample_norm,
  'top_right_singular_vectors': lambda x: metrics.top_right_singular_vectors(x, 2),
  'orthodev': lambda x: metrics.orthodev(x, x[0]),
  'neco_fit': lambda x: metrics.neco_fit(x, 2),
  'neco_score': lambda x: metrics.neco_score(metrics.neco_fit(np.ones((4, 5), np.float32), 2), x),
  'auroc': lambda x: metrics.auroc(x[:, 0], x[:, 1]),
  'fpr_at_95_tpr': lambda x: metrics.fpr_at_95_tpr(x[:, 0], x[:, 1]),
  'attention_entropy': lambda x: metrics.attention.attention_entropy(x[None, None]),
  'attention_rank': lambda x: metrics.attention.attention_rank(x[None, None]),
  'attention_logits_norm': lambda x: metrics.attention.attention_logits_norm(x[None, None]),
}


@pytest.mark.parametrize('name', sorted(COMPLEX_REFUSED))
def test_complex_input_is_refused_where_it_has_no_meaning(name):
  # Before: the imaginary part was silently dropped (a purely imaginary matrix was 0).
  x = (1j * RNG.standard_normal((12, 5))).astype(np.complex64)
  for fn in (COMPLEX_REFUSED[name], jax.jit(COMPLEX_REFUSED[name])):
    with pytest.raises(ValueError, match='complex'):
      fn(x)


def test_values_near_1e30_give_the_numbers_of_the_rescaled_input():
  x = _low_rank(40, 12, 4)
  big = x * np.float32(1e30)
  assert int(metrics.numerical_rank(big)) == int(metrics.numerical_rank(x)) == 4
  assert int(metrics.numerical_rank(big, atol=1e25)) == int(metrics.numerical_rank(x, atol=1e-5))
  for fn in (metrics.stable_rank, metrics.effective_rank):
    np.testing.assert_allclose(float(fn(big)), float(fn(x)), rtol=1e-5)
  np.testing.assert_allclose(
    np.asarray(metrics.singular_values(big)) / 1e30,
    np.asarray(metrics.singular_values(x)),
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    float(metrics.logits_norm(big)) / 1e30, np.linalg.norm(x.astype(np.float64)), rtol=1e-5
  )
  np.testing.assert_allclose(
    float(metrics.mean_per_sample_norm(big)) / 1e30,
    np.linalg.norm(x.astype(np.float64), axis=1).mean(),
    rtol=1e-5,
  )
  means = x[:5]
  np.testing.assert_allclose(
    float(metrics.orthodev(big[:5], big[5])), float(metrics.orthodev(means, x[5])), rtol=1e-5
  )
  for key, value in metrics.nc2(big[:5]).items():
    np.testing.assert_allclose(
      float(value), float(metrics.nc2(means)[key]), rtol=1e-4, atol=1e-6, err_msg=key
    )
  np.testing.assert_allclose(
    float(metrics.nc3(big[:5], x[5:10])), float(metrics.nc3(means, x[5:10])), rtol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(metrics.singular_vector_alignment(big[:6], x, 3)),
    np.asarray(metrics.singular_vector_alignment(x[:6], x, 3)),
    atol=1e-4,
  )


def test_neco_near_1e30_matches_the_unscaled_fit():
  train, test = RNG.standard_normal((200, 8)), RNG.standard_normal((20, 8))
  want = np.asarray(
    metrics.neco_score(metrics.neco_fit(train.astype(np.float32), 3), test.astype(np.float32))
  )
  big = metrics.neco_fit((train * 1e30).astype(np.float32), 3)
  got = np.asarray(metrics.neco_score(big, (test * 1e30).astype(np.float32)))
  assert np.all(np.isfinite(got)) and np.all(got > 0)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_neco_constant_coordinate_gets_unit_scale_like_sklearn():
  train = RNG.standard_normal((200, 8)).astype(np.float32)
  train[:, 3] = 2.1  # float32 rounding leaves a tiny nonzero std
  params = metrics.neco_fit(train, 3)
  assert float(params.scale[3]) == 1.0
  assert np.all(np.isfinite(np.asarray(metrics.neco_score(params, train[:5]))))
