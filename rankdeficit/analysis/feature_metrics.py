"""What the analysis measures on a run's extracted features (and a ViT's attention maps).

Each function takes `extraction.Features` of the splits it needs and returns a JSON-ready
dict; `measurements.py` decides which run on which layer group.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit import metrics
from rankdeficit.analysis import extraction
from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import probes
from rankdeficit.metrics import attention as attention_lib

# ---- ranks
# Ranks of a run's representations on ID test: the solution rank SR (pre-softmax logits),
# the post-softmax rank at the run's final T, the logits norms and the bound on SR, and the
# numerical and effective rank of every probed layer.


def logit_metrics(
  id_test: extraction.Features,
  *,
  temperature: float,
  num_classes: int,
  penultimate_width: int,
  has_bias: bool,
) -> dict[str, Any]:
  """Test accuracy, SR, post-softmax rank, logits norm and the bound on SR."""
  logits = jnp.asarray(id_test.logits)
  n = len(id_test.labels)
  return {
    'test_accuracy': float(np.mean(np.argmax(id_test.logits, -1) == id_test.labels)),
    'solution_rank': int(metrics.numerical_rank(logits)),
    'post_softmax_rank': int(metrics.softmax_rank(logits, temperature)),
    'post_softmax_rank_T1': int(metrics.softmax_rank(logits, 1.0)),
    'logits_norm_frobenius': float(np.asarray(metrics.logits_norm(logits))),
    'logits_norm_mean': float(np.asarray(metrics.mean_per_sample_norm(logits))),
    'penultimate_width': penultimate_width,
    # rank(H W + 1 b^T) <= width (+1 with a bias); also <= classes and <= examples.
    'solution_rank_bound': int(min(penultimate_width + int(has_bias), num_classes, n)),
    'solution_rank_bounded_by_classifier': bool(penultimate_width + int(has_bias) < num_classes),
  }


def representation_ranks(id_test: extraction.Features) -> dict[str, dict[str, float]]:
  """Numerical and effective rank of every probed layer on ID test."""
  reps = id_test.reps
  return {
    'representation_rank': {
      l: int(metrics.numerical_rank(jnp.asarray(x))) for l, x in reps.items()
    },
    'representation_effective_rank': {
      l: float(np.asarray(metrics.effective_rank(jnp.asarray(x)))) for l, x in reps.items()
    },
  }


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
  trained on ID train and scored on ID test, OOD ones on OOD train / OOD test."""

  def fit(train, test, classes, fold):
    return probes.fit_layer_probes(
      train.reps,
      train.labels,
      test.reps,
      test.labels,
      classes,
      key=jax.random.fold_in(key, fold),
      config=config,
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
  """NC1-NC4 on ID train penultimate features (`head`: the classifier's (kernel, bias))."""
  coords = id_train.coords[penult]
  present = int(len(np.unique(id_train.labels)))
  if present < num_classes:  # NC is defined over every class (metrics raise otherwise)
    nc = {'skipped': f'only {present}/{num_classes} classes present in id_train'}
  else:
    classifier = None if head is None else jnp.asarray(head[0][coords].T)  # [C, coords]
    nc = metrics.neural_collapse_from_features(
      jnp.asarray(id_train.reps[penult]),
      jnp.asarray(id_train.labels),
      num_classes,
      logits=jnp.asarray(id_train.logits),
      classifier=classifier,
    )
    nc = {k: float(np.asarray(v)) for k, v in nc.items()}
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
    stats = metrics.class_stats_from_features(
      jnp.asarray(id_test.reps[l]), jnp.asarray(id_test.labels), num_classes
    )
    ood_mean = jnp.mean(jnp.asarray(ood_test.reps[l]), axis=0)
    out[l] = float(np.asarray(metrics.orthodev(stats.means, ood_mean)))
  return out


# ---- ood detection
# NECO OOD detection of a run: PCA fitted on ID train penultimate features, ID test vs the
# detection set's test split: AUROC, AUPR-In/Out and FPR@95 in the NECO convention (ID
# positive) and the OpenOOD one (OOD positive).


def ood_detection(
  splits: dict[str, extraction.Features],
  penult: str,
  *,
  num_classes: int,
  neco_dim: int | None,
  detection_dataset: str,
) -> dict[str, Any]:
  """NECO (PCA of `neco_dim`, default `num_classes`, dimensions) on `penult`: ID test vs
  `det_test`."""
  id_train = splits['id_train'].reps[penult]
  dim = int(min(neco_dim or num_classes, id_train.shape[1]))
  params = metrics.neco_fit(jnp.asarray(id_train), dim)
  s_id = metrics.neco_score(params, jnp.asarray(splits['id_test'].reps[penult]))
  s_ood = metrics.neco_score(params, jnp.asarray(splits['det_test'].reps[penult]))
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
