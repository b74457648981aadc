"""Neural Collapse metrics and OrthoDev against NumPy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rankdeficit import metrics

RNG = np.random.default_rng(2)


def _simplex_etf(c, d, rng=RNG):
  """C unit-norm class means forming a simplex ETF in R^d (d >= C)."""
  q, _ = np.linalg.qr(rng.standard_normal((d, c)))
  etf = np.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c)
  return (etf @ q.T).astype(np.float32)  # [C, d]


def _reference_nc(feats, labels, c, w):
  feats = feats.astype(np.float64)
  mu = np.stack([feats[labels == k].mean(0) for k in range(c)])
  mu_g = feats.mean(0)
  centred = mu - mu_g
  sw = sum(((feats[labels == k] - mu[k]).T @ (feats[labels == k] - mu[k])) for k in range(c)) / len(
    feats
  )
  sb = centred.T @ centred / c
  nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-6)) / c
  norms = np.linalg.norm(centred, axis=1)
  nc3 = np.linalg.norm(w / np.linalg.norm(w) - centred / np.linalg.norm(centred))
  return nc1, norms.std(ddof=1) / norms.mean(), nc3, mu


def test_simplex_etf_has_rank_c_minus_1_and_zero_nc2():
  c = 6
  m = _simplex_etf(c, 16)
  assert int(metrics.numerical_rank(m)) == c - 1
  nc2 = metrics.nc2(jnp.asarray(m))
  for name, value in nc2.items():
    assert float(value) < 1e-5, name


def test_collapsed_dataset_has_zero_nc1_and_streaming_matches_reference():
  c, d, per = 4, 8, 30
  means = _simplex_etf(c, d) * 5.0 + 3.0  # offset: uncentred features
  labels = np.repeat(np.arange(c), per)
  feats = means[labels]
  stats = metrics.class_stats_from_features(feats, labels, c)
  assert float(metrics.nc1(stats)) < 1e-8
  # now with within-class noise, fed in 3 uneven batches with a padded (masked) tail
  noisy = feats + 0.3 * RNG.standard_normal(feats.shape).astype(np.float32)
  w = RNG.standard_normal((c, d)).astype(np.float32)
  perm = RNG.permutation(len(labels))
  x, y = noisy[perm], labels[perm]
  stats = metrics.class_stats_init(c, d)
  update = jax.jit(metrics.class_stats_update)
  for lo, hi in [(0, 50), (50, 51), (51, 120)]:
    xb = np.concatenate([x[lo:hi], np.full((7, d), 1e3, np.float32)])
    yb = np.concatenate([y[lo:hi], np.zeros(7, int)])
    mb = np.r_[np.ones(hi - lo, bool), np.zeros(7, bool)]
    stats = update(stats, xb, yb, mb)
  ref_nc1, ref_equinorm, ref_nc3, ref_mu = _reference_nc(x, y, c, w)
  np.testing.assert_allclose(np.asarray(stats.counts), per)
  np.testing.assert_allclose(np.asarray(stats.means), ref_mu, rtol=1e-5, atol=1e-5)
  out = metrics.neural_collapse(stats, classifier=w)
  assert float(out['nc1']) == pytest.approx(ref_nc1, rel=1e-4)
  assert float(out['nc2_equinorm']) == pytest.approx(ref_equinorm, rel=1e-4)
  assert float(out['nc3']) == pytest.approx(ref_nc3, rel=1e-5)


def test_nc3_zero_when_classifier_is_scaled_centred_means():
  c, d = 5, 9
  feats = RNG.standard_normal((100, d)).astype(np.float32)
  labels = np.arange(100) % c
  stats = metrics.class_stats_from_features(feats, labels, c)
  w = 7.0 * metrics.centred_class_means(stats)
  assert float(metrics.nc3(stats, w)) < 1e-6


def test_nc4_counts_disagreement_with_nearest_class_mean():
  means = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
  feats = np.array([[0.5, 0], [9.0, 0], [1.0, 0], [11.0, 0]], np.float32)
  logits = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], np.float32)  # third disagrees
  ncc = metrics.ncc_update(metrics.ncc_init(), feats, logits, means)
  assert float(metrics.nc4(ncc)) == pytest.approx(0.25)
  ncc = metrics.ncc_update(ncc, feats, logits, means, mask=np.array([1, 1, 0, 1], bool))
  assert float(metrics.nc4(ncc)) == pytest.approx(1 / 7)
  out = metrics.neural_collapse_from_features(feats, np.array([0, 1, 0, 1]), 2, logits=logits)
  assert 'nc4' in out and 'nc1' in out


def test_orthodev():
  mu = np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32)
  ood = np.array([0, 0, 2.0], np.float32)
  assert float(metrics.orthodev(mu, ood)) == pytest.approx(0.0, abs=1e-7)
  ood = np.array([1.0, 1.0, 0], np.float32)
  assert float(metrics.orthodev(mu, ood)) == pytest.approx(1 / np.sqrt(2), rel=1e-6)
  # negative cosines count by absolute value
  assert float(metrics.orthodev(-mu, ood)) == pytest.approx(1 / np.sqrt(2), rel=1e-6)
  # optional centring
  centre = np.array([0.5, 0.5, 0.0], np.float32)
  ref = np.mean(np.abs((mu - centre) @ (ood - centre)))  # ood - centre = (0.5, 0.5, 0)
  expected = ref / (np.linalg.norm(mu - centre, axis=1)[0] * np.linalg.norm(ood - centre))
  assert float(metrics.orthodev(mu, ood, centre=centre)) == pytest.approx(expected, abs=1e-6)
