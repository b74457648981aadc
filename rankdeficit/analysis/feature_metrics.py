"""What the analysis measures on a run's extracted features (and a ViT's attention maps).

Each function takes `extraction.Features` of the splits it needs -- rows sharded over the
mesh, never gathered -- and returns a JSON-ready dict; `measurements.py` decides which run
on which layer group. Ranks come from a TSQR over the devices (`metrics.tsqr`), class
statistics, norms and NECO's covariance from sums over rows (`metrics.streamed`), probes
from data-parallel training (`analysis.sharded_probes`); only NECO's per-row scores come
to the host (`rows.gather_vector`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from rankdeficit import metrics
from rankdeficit.analysis import extraction
from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import probes
from rankdeficit.analysis import rows
from rankdeficit.analysis import sharded_probes
from rankdeficit.metrics import attention as attention_lib
from rankdeficit.metrics import row_blocks
from rankdeficit.metrics import streamed
from rankdeficit.metrics import tsqr


def _number(x) -> float:
  return float(rows.to_host(x))


# ---- ranks
# Ranks of a run's representations on ID test: the solution rank SR (pre-softmax logits),
# the post-softmax rank at the run's final T, the logits norms and the bound on SR, and the
# numerical and effective rank of every probed layer.


def _correct_body(logits, labels, ids, *, axis):
  hits = (jnp.argmax(logits, axis=-1) == labels) & (ids >= 0)
  return row_blocks.psum(jnp.sum(hits.astype(jnp.int32)), axis)


@functools.partial(jax.jit, static_argnames='mesh')
def _num_correct(logits, labels, ids, *, mesh):
  return row_blocks.over_rows(
    _correct_body,
    (logits, labels, ids),
    in_specs=(P(rows.DATA_AXIS),) * 3,
    out_specs=P(),
    mesh=mesh,
    axis=rows.DATA_AXIS,
  )


def _rank(x: jax.Array, mask: jax.Array) -> int:
  return int(rows.to_host(tsqr.streamed_numerical_rank(x, mask)))


def logit_metrics(
  id_test: extraction.Features,
  *,
  temperature: float,
  num_classes: int,
  penultimate_width: int,
  has_bias: bool,
) -> dict[str, Any]:
  """Test accuracy, SR, post-softmax rank, logits norm and the bound on SR (`id_test`
  carries the final layers: `extraction.with_final_layers`)."""
  logits, mask, n = id_test.logits, id_test.mask, id_test.num_examples
  correct = _num_correct(logits, id_test.labels, id_test.ids, mesh=logits.sharding.mesh)
  post = id_test.reps[probe_layers.SOFTMAX]  # softmax(z / T), the probed layer
  post_t1 = post if temperature == 1 else extraction.softmax_rows(logits, id_test.ids, 1.0)
  return {
    'test_accuracy': _number(correct) / n,
    'solution_rank': _rank(logits, mask),
    'post_softmax_rank': _rank(post, mask),
    'post_softmax_rank_T1': _rank(post_t1, mask),
    'logits_norm_frobenius': _number(streamed.streamed_logits_norm(logits, mask)),
    'logits_norm_mean': _number(streamed.streamed_mean_per_sample_norm(logits, mask)),
    'penultimate_width': penultimate_width,
    # rank(H W + 1 b^T) <= width (+1 with a bias); also <= classes and <= examples.
    'solution_rank_bound': int(min(penultimate_width + int(has_bias), num_classes, n)),
    'solution_rank_bounded_by_classifier': bool(penultimate_width + int(has_bias) < num_classes),
  }


def representation_ranks(id_test: extraction.Features) -> dict[str, dict[str, float]]:
  """Numerical and effective rank of every probed layer on ID test (one TSQR each)."""
  ranks, effective, mask = {}, {}, id_test.mask
  for layer, x in id_test.reps.items():
    spectrum = tsqr.streamed_spectrum(x, mask)
    ranks[layer] = int(rows.to_host(spectrum['numerical_rank']))
    effective[layer] = float(rows.to_host(spectrum['effective_rank']))
  return {'representation_rank': ranks, 'representation_effective_rank': effective}


# ---- depth
# Per-layer linear-probe accuracies of a run and what they give: effective depth kappa
# (ID) and OOD generalization loss rho (OOD), under every convention of
# `rankdeficit.analysis.probe_layers`.


def probe_accuracies(
  splits: dict[str, extraction.Features],
  *,
  num_classes: int,
  ood_num_classes: int | None,
  key,
  config: probes.ProbeConfig,
  timer,
) -> dict[str, dict[str, float]]:
  """ID (and OOD) probe accuracy of every layer the splits hold, forward order: ID probes
  trained on ID train and scored on ID test, OOD ones on OOD train / OOD test (data-parallel
  over the rows: `sharded_probes`)."""

  def fit(train, test, classes, fold):
    return sharded_probes.fit_layer_probes(
      train, test, list(train.reps), classes, key=jax.random.fold_in(key, fold), config=config
    )

  with timer('id_probes'):
    out = {'id_probe_accuracy': fit(splits['id_train'], splits['id_test'], num_classes, 0)}
  if 'ood_train' in splits:
    with timer('ood_probes'):
      out['ood_probe_accuracy'] = fit(splits['ood_train'], splits['ood_test'], ood_num_classes, 1)
  return out


def depth_metrics(
  id_accuracy: dict[str, float], ood_accuracy: dict[str, float] | None, hidden: list[str]
) -> dict[str, Any]:
  """kappa / rho under every convention of `rankdeficit.analysis.probe_layers`."""
  out: dict[str, Any] = {
    'probe_convention': probe_layers.DEFAULT_CONVENTION,
    'id_probe_accuracy': id_accuracy,
  }
  out['kappa_by_convention'] = probe_layers.kappa_by_convention(id_accuracy, hidden)
  out['kappa'] = out['kappa_by_convention'][probe_layers.DEFAULT_CONVENTION]
  out['rho'] = out['rho_by_convention'] = None
  if ood_accuracy is not None:
    out['ood_probe_accuracy'] = ood_accuracy
    out['rho_by_convention'] = probe_layers.rho_by_convention(ood_accuracy, hidden)
    out['rho'] = out['rho_by_convention'][probe_layers.DEFAULT_CONVENTION]
    out['ood_best_layer'] = max(ood_accuracy, key=ood_accuracy.get)
  return out


# ---- collapse
# Neural Collapse of a run's penultimate features (NC1-NC4 on ID train, as Papyan et al.)
# and OrthoDev (paper Eq. 4: ID test class means vs the OOD test global mean) per layer.


def neural_collapse_metrics(
  id_train: extraction.Features, penult: str, *, num_classes: int, head, full_width: int
) -> dict[str, Any]:
  """NC1-NC4 on ID train penultimate features (`head`: the classifier's (kernel, bias)),
  from class statistics streamed over the rows (`metrics.streamed_class_stats`)."""
  coords = id_train.coords[penult]
  feats, mask = id_train.reps[penult], id_train.mask
  stats = streamed.streamed_class_stats(feats, id_train.labels, num_classes, mask)
  present = int(np.sum(rows.to_host(stats.counts) > 0))
  if present < num_classes:  # NC is defined over every class (metrics raise otherwise)
    nc = {'skipped': f'only {present}/{num_classes} classes present in id_train'}
  else:
    mesh = feats.sharding.mesh
    classifier = None if head is None else rows.replicate(np.asarray(head[0][coords].T), mesh)
    ncc = streamed.streamed_ncc(feats, id_train.logits, stats.means, mask)
    nc = metrics.neural_collapse(stats, classifier, ncc)
    nc = {k: _number(v) for k, v in nc.items()}
  nc['split'] = 'id_train'
  if len(coords) < full_width:
    nc['note'] = f'on a random subset of {len(coords)} of {full_width} coordinates'
  return nc


def orthodev_per_layer(
  id_test: extraction.Features,
  ood_test: extraction.Features,
  layers: list[str],
  *,
  num_classes: int,
) -> dict[str, float]:
  """OrthoDev (ID test class means vs the OOD test global mean) of each of `layers`."""
  out = {}
  for l in layers:
    _, means = streamed.streamed_class_means(
      id_test.reps[l], id_test.labels, num_classes, id_test.mask
    )
    ood_mean = streamed.streamed_mean(ood_test.reps[l], ood_test.mask)
    out[l] = _number(metrics.orthodev(means, ood_mean))
  return out


# ---- ood detection
# NECO OOD detection of a run: PCA fitted on ID train penultimate features, ID test vs the
# detection set's test split: AUROC, AUPR-In/Out and FPR@95 in the NECO convention (ID
# positive) and the OpenOOD one (OOD positive).


def _scores(params, split: extraction.Features, penult: str) -> jax.Array:
  """NECO scores of a split's real rows, in its order, on the host (per-row scalars)."""
  scores = streamed.streamed_neco_score(split.reps[penult], params)
  return jnp.asarray(rows.gather_vector(scores, split.ids, split.num_examples))


def ood_detection(
  splits: dict[str, extraction.Features],
  penult: str,
  *,
  num_classes: int,
  neco_dim: int | None,
  detection_dataset: str,
) -> dict[str, Any]:
  """NECO (PCA of `neco_dim`, default `num_classes`, dimensions) on `penult`: ID test vs
  `det_test`. The PCA is fitted from the streamed covariance of ID train; only the score
  vectors are gathered."""
  id_train = splits['id_train']
  train = id_train.reps[penult]
  dim = int(min(neco_dim or num_classes, train.shape[1]))
  params = streamed.streamed_neco_fit(train, dim, id_train.mask)
  s_id = _scores(params, splits['id_test'], penult)
  s_ood = _scores(params, splits['det_test'], penult)
  scores = metrics.ood_metrics(s_id, s_ood, fpr_convention='neco')
  det = {k: float(np.asarray(v)) for k, v in scores.items()}
  det['fpr95_openood'] = float(np.asarray(metrics.fpr_at_95_tpr(s_id, s_ood, convention='openood')))
  det.update(
    method='neco',
    neco_dim=dim,
    ood_dataset=detection_dataset,
    id_split='test',
    ood_split='test',
    fit_split='id_train',
    fpr95_neco_convention='ID positive: fraction of OOD accepted when 95% of ID '
    'is kept (ViM/NECO code, paper Table 2)',
    fpr95_openood_convention='OOD positive (OpenOOD)',
  )
  return det


# ---- attention
# Attention maps of a ViT run: per attention layer, the rank, effective rank, entropy and
# logits norm of its attention maps (`rankdeficit.metrics.attention`).


def attention_metrics(
  config, model, variables, *, num_examples: int = 256
) -> dict[str, dict[str, Any]]:
  """Per attention layer, rank / effective rank / entropy / logits norm of the attention maps
  on the first `num_examples` ID test images: the mean over heads, and the per-head values
  (`per_head`)."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.models import vit  # pylint: disable=import-outside-toplevel

  batch = next(
    iter(
      input_pipeline.create_eval_iterator(
        config, config.dataset, 'test', batch_size=num_examples, num_examples=num_examples
      )
    )
  )
  images = jnp.asarray(batch['image'][np.asarray(batch['mask'], bool)])
  logits = jax.jit(lambda v, x: vit.attention_logits(model, v, x))(variables, images)
  out = {}
  for layer, z in logits.items():
    stats = jax.device_get(attention_lib.attention_statistics(z))
    out[layer] = {k: float(np.mean(v)) for k, v in stats.items()}
    out[layer]['per_head'] = {k: [float(x) for x in v] for k, v in stats.items()}
  return out
