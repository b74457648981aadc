"""Every public metric on arrays sharded P('data') over Explicit and Auto meshes.

Each case runs unsharded (the reference), then with its array inputs sharded along
their first axis over an 8-device mesh (``jax.make_mesh`` + ``jax.set_mesh``), eagerly
and under ``jax.jit``, for both axis types. Run with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (as .ci/run does).
"""

import inspect

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rankdeficit import metrics

N, D, C = 64, 16, 8
RNG = np.random.default_rng(7)
FEATS = (RNG.standard_normal((N, 3)) @ RNG.standard_normal((3, D))).astype(np.float32)
FEATS += 0.1 * RNG.standard_normal((N, D)).astype(np.float32)
LABELS = (np.arange(N) % C).astype(np.int32)
LOGITS = RNG.standard_normal((N, C)).astype(np.float32)
MASK = np.arange(N) < N - 5
IMAGES = RNG.standard_normal((8, 6, 6, 3)).astype(np.float32)
KERNEL = RNG.standard_normal((8, 3, 3, 8)).astype(np.float32)
ID_SCORES = RNG.normal(1.0, 1.0, N).astype(np.float32)
OOD_SCORES = RNG.normal(0.0, 1.0, N).astype(np.float32)
KEY = jax.random.PRNGKey(0)
ATTENTION = RNG.standard_normal((8, 2, 5, 5)).astype(np.float32)  # [N, heads, q, k]


def _stats(feats, labels):
  return metrics.class_stats_update(metrics.class_stats_init(C, D), feats, labels)


def _ncc(feats, logits):
  means = jnp.asarray(_stats(FEATS, LABELS).means)
  return metrics.ncc_update(metrics.ncc_init(), feats, logits, means)


# name -> (function of the sharded arrays, the arrays). Arrays are sharded along axis 0;
# the lambdas add the static/unsharded arguments.
CASES = {
  'singular_values': (metrics.singular_values, (FEATS,)),
  'numerical_rank': (lambda x, m: metrics.numerical_rank(x, row_mask=m), (FEATS, MASK)),
  'numerical_rank_rtol': (lambda x: metrics.numerical_rank(x, rtol=0.05), (FEATS,)),
  'rank_tolerance': (
    lambda x: metrics.rank_tolerance(metrics.singular_values(x), x.shape),
    (FEATS,),
  ),
  'effective_rank': (metrics.effective_rank, (FEATS,)),
  'stable_rank': (metrics.stable_rank, (FEATS,)),
  'top_k_singular_values': (lambda x: metrics.top_k_singular_values(x, 5), (FEATS,)),
  'logits_norm': (metrics.logits_norm, (LOGITS, MASK)),
  'mean_per_sample_norm': (metrics.mean_per_sample_norm, (LOGITS, MASK)),
  'softmax_rank': (lambda x, m: metrics.softmax_rank(x, 0.5, row_mask=m), (LOGITS, MASK)),
  'flatten_features': (metrics.flatten_features, (IMAGES,)),
  'feature_subset_indices': (
    lambda x: metrics.feature_subset_indices(x.shape[1], 5, KEY),
    (FEATS,),
  ),
  'seeded_subset_indices': (lambda x: metrics.seeded_subset_indices(x.shape[1], 5, 0), (FEATS,)),
  'representation_matrix': (
    lambda x: metrics.representation_matrix(x, max_dims=50, key=KEY),
    (IMAGES,),
  ),
  'representation_rank': (
    lambda x: metrics.representation_rank(x, max_dims=50, key=KEY),
    (IMAGES,),
  ),
  'representation_rank_indices': (
    lambda x: metrics.representation_rank(x, indices=metrics.seeded_subset_indices(108, 50, 0)),
    (IMAGES,),
  ),
  'kernel_as_matrix': (metrics.kernel_as_matrix, (KERNEL,)),
  'conv_patches': (lambda x: metrics.conv_patches(x, (3, 3)), (IMAGES,)),
  'layer_input_matrix': (lambda x: metrics.layer_input_matrix(x, 3), (IMAGES,)),
  'subsample_rows': (lambda x: metrics.subsample_rows(x, 20, KEY), (FEATS,)),
  'subsample_rows_indices': (
    lambda x: metrics.subsample_rows(x, 20, indices=metrics.seeded_subset_indices(N, 20, 0)),
    (FEATS,),
  ),
  'top_right_singular_vectors': (
    lambda x: jnp.abs(metrics.top_right_singular_vectors(x, 3)),
    (FEATS,),
  ),
  'singular_vector_alignment': (
    lambda w, a: metrics.singular_vector_alignment(w, a, 3),
    (FEATS[:16], FEATS),
  ),
  'max_alignment': (
    lambda w, a: metrics.max_alignment(metrics.singular_vector_alignment(w, a, 3)),
    (FEATS[:16], FEATS),
  ),
  'mean_max_alignment': (
    lambda w, a: metrics.mean_max_alignment([metrics.singular_vector_alignment(w, a, 3)]),
    (FEATS[:16], FEATS),
  ),
  'gradient_rank': (metrics.gradient_rank, (FEATS,)),
  'class_stats_init': (lambda x: metrics.class_stats_init(C, x.shape[1]), (FEATS,)),
  'class_stats_update': (_stats, (FEATS, LABELS)),
  'class_stats_from_features': (
    lambda x, y, m: metrics.class_stats_from_features(x, y, C, m),
    (FEATS, LABELS, MASK),
  ),
  'global_mean': (lambda x, y: metrics.global_mean(_stats(x, y)), (FEATS, LABELS)),
  'centred_class_means': (lambda x, y: metrics.centred_class_means(_stats(x, y)), (FEATS, LABELS)),
  'within_class_covariance': (
    lambda x, y: metrics.within_class_covariance(_stats(x, y)),
    (FEATS, LABELS),
  ),
  'nc1': (lambda x, y: metrics.nc1(_stats(x, y)), (FEATS, LABELS)),
  'nc2': (lambda x, y: metrics.nc2(_stats(x, y)), (FEATS, LABELS)),
  'nc3': (lambda x, y, w: metrics.nc3(_stats(x, y), w), (FEATS, LABELS, FEATS[:C])),
  'ncc_init': (lambda x: metrics.ncc_init(), (FEATS,)),
  'ncc_update': (_ncc, (FEATS, LOGITS)),
  'nc4': (lambda x, z: metrics.nc4(_ncc(x, z)), (FEATS, LOGITS)),
  'neural_collapse': (
    lambda x, y, z: metrics.neural_collapse(_stats(x, y), FEATS[:C], _ncc(x, z)),
    (FEATS, LABELS, LOGITS),
  ),
  'neural_collapse_from_features': (
    lambda x, y, z: metrics.neural_collapse_from_features(x, y, C, logits=z),
    (FEATS, LABELS, LOGITS),
  ),
  'orthodev': (metrics.orthodev, (FEATS[:8], FEATS[8])),
  'neco_fit': (lambda x: metrics.neco_fit(x, 3), (FEATS,)),
  'neco_score': (
    lambda x, z: metrics.neco_score(metrics.neco_fit(FEATS, 3), x, z),
    (FEATS, LOGITS),
  ),
  'auroc': (metrics.auroc, (ID_SCORES, OOD_SCORES)),
  'aupr_in': (metrics.aupr_in, (ID_SCORES, OOD_SCORES)),
  'aupr_out': (metrics.aupr_out, (ID_SCORES, OOD_SCORES)),
  'fpr_at_95_tpr': (metrics.fpr_at_95_tpr, (ID_SCORES, OOD_SCORES)),
  'fpr_at_95_tpr_openood': (
    lambda a, b: metrics.fpr_at_95_tpr(a, b, convention='openood'),
    (ID_SCORES, OOD_SCORES),
  ),
  'ood_metrics': (metrics.ood_metrics, (ID_SCORES, OOD_SCORES)),
  'replicated': (metrics.replicated, (FEATS,)),
  'streamed_spectrum': (metrics.streamed_spectrum, (FEATS, MASK)),
  'streamed_singular_values': (metrics.streamed_singular_values, (FEATS,)),
  'streamed_numerical_rank': (metrics.streamed_numerical_rank, (FEATS, MASK)),
  'streamed_effective_rank': (metrics.streamed_effective_rank, (FEATS, MASK)),
  'streamed_class_stats': (
    lambda x, y, m: metrics.streamed_class_stats(x, y, C, m),
    (FEATS, LABELS, MASK),
  ),
  'streamed_class_means': (
    lambda x, y, m: metrics.streamed_class_means(x, y, C, m),
    (FEATS, LABELS, MASK),
  ),
  'streamed_ncc': (
    lambda x, z, m: metrics.streamed_ncc(x, z, _stats(FEATS, LABELS).means, m),
    (FEATS, LOGITS, MASK),
  ),
  'streamed_mean': (metrics.streamed_mean, (FEATS, MASK)),
  # The PCA directions' signs are arbitrary: compare the (sign-free) scores they give.
  'streamed_neco_fit': (
    lambda x, m: metrics.neco_score(metrics.streamed_neco_fit(x, 3, m), FEATS),
    (FEATS, MASK),
  ),
  'streamed_neco_score': (
    lambda x: metrics.streamed_neco_score(x, metrics.neco_fit(FEATS, 3)),
    (FEATS,),
  ),
  'streamed_logits_norm': (metrics.streamed_logits_norm, (LOGITS, MASK)),
  'streamed_mean_per_sample_norm': (metrics.streamed_mean_per_sample_norm, (LOGITS, MASK)),
  'attention_probabilities': (metrics.attention_probabilities, (ATTENTION,)),
  'attention_entropy': (metrics.attention_entropy, (ATTENTION,)),
  'attention_rank': (metrics.attention_rank, (ATTENTION,)),
  'attention_effective_rank': (metrics.attention_effective_rank, (ATTENTION,)),
  'attention_logits_norm': (metrics.attention_logits_norm, (ATTENTION,)),
  'attention_statistics': (metrics.attention_statistics, (ATTENTION,)),
}
# Multi-process helpers, tested on their own below.
PROCESS_HELPERS = {'global_batch', 'gather_from_processes'}

pytestmark = pytest.mark.skipif(
  jax.device_count() < 8,
  reason='needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8',
)


def _public_functions() -> set[str]:
  return {
    name
    for name, obj in vars(metrics).items()
    if not name.startswith('_') and inspect.isfunction(obj)
  }


def test_every_public_function_has_a_case():
  covered = {name.split('_openood')[0].removesuffix('_rtol') for name in CASES}
  assert _public_functions() - covered - PROCESS_HELPERS == set()


def _assert_same(got, want):
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got_leaves) == len(want_leaves)
  for g, w in zip(got_leaves, want_leaves):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('name', sorted(CASES))
def test_sharded_matches_unsharded(name):
  fn, arrays = CASES[name]
  want = fn(*arrays)
  for axis_type in (AxisType.Explicit, AxisType.Auto):
    mesh = jax.make_mesh((8,), ('data',), axis_types=(axis_type,))
    with jax.set_mesh(mesh):
      sharded = [jax.device_put(a, P('data')) for a in arrays]
      _assert_same(fn(*sharded), want)
      _assert_same(jax.jit(fn)(*sharded), want)


def test_tolerances_are_traced_not_static():
  x = jnp.asarray(np.diag([10.0, 1.0, 0.1, 0.01]).astype(np.float32))
  rank = jax.jit(lambda x, r: metrics.numerical_rank(x, rtol=r))
  assert [int(rank(x, r)) for r in (0.05, 0.005, 0.0005)] == [2, 3, 4]
  assert rank._cache_size() == 1  # pylint: disable=protected-access


def test_process_local_rows_become_one_global_array():
  mesh = jax.make_mesh((8,), ('data',), axis_types=(AxisType.Explicit,))
  with jax.set_mesh(mesh):
    global_feats = metrics.global_batch(FEATS, mesh)
    assert global_feats.shape == FEATS.shape
    assert int(metrics.numerical_rank(global_feats)) == int(metrics.numerical_rank(FEATS))
  np.testing.assert_array_equal(metrics.gather_from_processes(FEATS), FEATS)
