"""metrics.streamed: statistics of row-sharded features equal the in-memory metrics of the
gathered real rows (padding rows, marked False in row_mask, hold garbage and count
nowhere). Run with XLA_FLAGS=--xla_force_host_platform_device_count=8."""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rankdeficit import metrics

N, D, C = 256, 24, 5
RNG = np.random.default_rng(0)
LABELS = (np.arange(N) * C // N).astype(np.int32)
FEATS = (RNG.standard_normal((N, D)) + 3 * RNG.standard_normal((C, D))[LABELS]).astype(np.float32)
LOGITS = RNG.standard_normal((N, C)).astype(np.float32)
MASK = np.ones(N, bool)
MASK[100:110] = MASK[-3:] = False
GARBAGE = np.where(MASK[:, None], FEATS, np.nan).astype(np.float32)  # NaN on padding rows

pytestmark = pytest.mark.skipif(
  jax.device_count() < 8,
  reason='needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8',
)


def _sharded(*arrays):
  mesh = Mesh(np.asarray(jax.devices()[:8]), ('data',))
  return [jax.device_put(a, NamedSharding(mesh, P('data'))) for a in arrays]


def _close(got, want, rtol=1e-5, atol=1e-5):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


def test_class_statistics_and_neural_collapse():
  x, y, m = _sharded(GARBAGE, LABELS, MASK)
  stats = metrics.streamed_class_stats(x, y, C, m)
  want = metrics.class_stats_from_features(FEATS[MASK], LABELS[MASK], C)
  _close(stats, want, atol=1e-3)  # the scatter sums ~N entries of size ~1
  counts, means = metrics.streamed_class_means(x, y, C, m)
  _close((counts, means), (want.counts, want.means))
  ncc = metrics.streamed_ncc(x, *_sharded(LOGITS), stats.means, m)
  want_ncc = metrics.ncc_update(metrics.ncc_init(), FEATS[MASK], LOGITS[MASK], want.means)
  _close(ncc, want_ncc, rtol=0, atol=0)
  classifier = RNG.standard_normal((C, D)).astype(np.float32)
  _close(
    metrics.neural_collapse(stats, classifier, ncc),
    metrics.neural_collapse_from_features(
      FEATS[MASK], LABELS[MASK], C, logits=LOGITS[MASK], classifier=classifier
    ),
  )


def test_out_of_range_labels_make_the_counts_nan():
  bad = LABELS.copy()
  bad[5] = C
  x, y, m = _sharded(FEATS, bad, MASK)
  assert np.all(np.isnan(np.asarray(metrics.streamed_class_stats(x, y, C, m).counts)))
  bad[5], bad[100] = 0, C  # on a padding row: ignored
  x, y, m = _sharded(FEATS, bad, MASK)
  stats = metrics.streamed_class_stats(x, y, C, m)
  assert np.all(np.isfinite(np.asarray(stats.counts)))


def test_mean_norms_and_orthodev():
  x, z, m = _sharded(GARBAGE, np.where(MASK[:, None], LOGITS, np.inf), MASK)
  mean = metrics.streamed_mean(x, m)
  np.testing.assert_allclose(mean, FEATS[MASK].mean(0), rtol=1e-5, atol=1e-6)
  assert float(metrics.streamed_logits_norm(z, m)) == pytest.approx(
    float(metrics.logits_norm(LOGITS[MASK])), rel=1e-6
  )
  assert float(metrics.streamed_mean_per_sample_norm(z, m)) == pytest.approx(
    float(metrics.mean_per_sample_norm(LOGITS[MASK])), rel=1e-6
  )
  _, means = metrics.streamed_class_means(x, *_sharded(LABELS), C, m)
  want = metrics.class_stats_from_features(FEATS[MASK], LABELS[MASK], C).means
  assert float(metrics.orthodev(means, mean)) == pytest.approx(
    float(metrics.orthodev(want, FEATS[MASK].mean(0))), rel=1e-5
  )


def test_neco_fit_and_scores():
  x, m = _sharded(GARBAGE, MASK)
  params = metrics.streamed_neco_fit(x, 3, m)
  want = metrics.neco_fit(FEATS[MASK], 3)
  _close(
    (params.mean, params.scale, params.explained_variance),
    (
      want.mean,
      want.scale,
      want.explained_variance,
    ),
  )
  # PCA directions up to sign: compare the (sign-free) scores, computed on each device.
  scores = metrics.streamed_neco_score(*_sharded(FEATS), params)
  assert scores.sharding.spec == P('data')
  np.testing.assert_allclose(scores, metrics.neco_score(want, FEATS), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='dim must be in'):
    metrics.streamed_neco_fit(x, D + 1, m)


def test_unsharded_input_is_one_block():
  stats = metrics.streamed_class_stats(FEATS, LABELS, C)
  _close(stats, metrics.class_stats_from_features(FEATS, LABELS, C), atol=1e-3)
