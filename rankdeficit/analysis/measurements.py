"""The metric steps of an analysis applied to a run's extracted features: per layer group
(one extraction pass each: representation ranks, probe accuracies, OrthoDev), then on the
last group, which holds the penultimate and the final layers (SR and logits norms, Neural
Collapse, NECO), and the per-layer results merged over the groups (ranks, kappa / rho,
OrthoDev). The numbers do not depend on the grouping."""

from __future__ import annotations

from typing import Any

from absl import logging
import jax

from rankdeficit.analysis import extraction
from rankdeficit.analysis import feature_metrics
from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import rows
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.analysis.loading import LoadedRun


def _without_final_layers(
  splits: dict[str, extraction.Features],
) -> dict[str, extraction.Features]:
  return {
    k: v._replace(reps={l: x for l, x in v.reps.items() if l not in probe_layers.FINAL_LAYERS})
    for k, v in splits.items()
  }


def layer_metrics(
  splits, layers, *, num_classes, ood_classes, key, probe_config, layer_ranks, timer
) -> dict[str, dict[str, float]]:
  """Per-layer results of one layer group: ranks, probe accuracies, OrthoDev."""
  out = {}
  if layer_ranks:
    with timer('representation_ranks'):
      out.update(feature_metrics.representation_ranks(splits['id_test']))
  out.update(
    feature_metrics.probe_accuracies(
      splits,
      num_classes=num_classes,
      ood_num_classes=ood_classes,
      key=key,
      config=probe_config,
      timer=timer,
    )
  )
  if 'ood_test' in splits:
    with timer('collapse'):
      out['orthodev_per_layer'] = feature_metrics.orthodev_per_layer(
        splits['id_test'], splits['ood_test'], layers, num_classes=num_classes
      )
  return out


def grouped_layer_metrics(
  run: LoadedRun, analysis: AnalysisConfig, coords, groups, *, coord_key, probe_key, timer, mesh
):
  """Per-layer metrics, one extraction pass per layer group; returns them and the last
  group's splits (which hold the penultimate layer and the final layers). One group's
  features are held at a time, on the devices of `mesh`."""
  per_layer: dict[str, dict[str, float]] = {}
  splits = None
  for i, group in enumerate(groups):
    del splits  # the previous group's features go before the next group's come
    splits = extraction.extract_splits(
      run.config,
      run.model,
      run.variables,
      temperature=run.temperature,
      batch_size=int(analysis.batch_size or run.config.eval_batch_size),
      max_examples=analysis.max_examples,
      max_train_examples=analysis.max_train_examples,
      key=coord_key,
      max_dims=analysis.max_dims,
      timer=timer,
      coords={l: coords[l] for l in group},
      mesh=mesh,
    )
    _log_held(i, group, splits)
    if i < len(groups) - 1:  # the final layers are measured once, with the last group
      splits = _without_final_layers(splits)
    for name, values in layer_metrics(
      splits,
      group,
      num_classes=run.num_classes,
      ood_classes=run.ood_classes,
      key=probe_key,
      probe_config=analysis.probe,
      layer_ranks=analysis.layer_ranks,
      timer=timer,
    ).items():
      per_layer.setdefault(name, {}).update(values)
  return per_layer, splits


def _log_held(index: int, group: list[str], splits) -> None:
  """Logs the feature bytes this process holds for one layer group (its devices' rows)."""
  held = rows.held_bytes(splits)
  logging.info(
    'Analysis layer group %d %s: process %d holds %d bytes (%.3f GiB) of features on its '
    '%d device(s)',
    index,
    group,
    jax.process_index(),
    held,
    held / 2**30,
    jax.local_device_count(),
  )


def final_metrics(run: LoadedRun, splits, hidden, *, full_dims, neco_dim, timer) -> dict[str, Any]:
  """Logits (SR, norms), Neural Collapse and NECO: from the group holding the penultimate
  layer and the final layers."""
  penult = hidden[-1]
  with timer('logits_metrics'):
    out = feature_metrics.logit_metrics(
      splits['id_test'],
      temperature=run.temperature,
      num_classes=run.num_classes,
      penultimate_width=full_dims[penult],
      has_bias=run.head is not None,
    )
  with timer('collapse'):
    out['neural_collapse'] = feature_metrics.neural_collapse_metrics(
      splits['id_train'],
      penult,
      num_classes=run.num_classes,
      head=run.head,
      full_width=full_dims[penult],
    )
  if 'det_test' in splits:
    with timer('neco'):
      out['ood_detection'] = feature_metrics.ood_detection(
        splits,
        penult,
        num_classes=run.num_classes,
        neco_dim=neco_dim,
        detection_dataset=run.config.ood_detection_dataset or run.config.ood_dataset,
      )
  return out


def per_layer_results(per_layer: dict[str, dict[str, float]], hidden) -> dict[str, Any]:
  """The merged per-layer metrics as analysis.json holds them: ranks, probe accuracies with
  kappa / rho (`feature_metrics.depth_metrics`), OrthoDev (of the penultimate layer, and per
  layer)."""
  out = {
    k: per_layer[k]
    for k in ('representation_rank', 'representation_effective_rank')
    if k in per_layer
  }
  out.update(
    feature_metrics.depth_metrics(
      per_layer['id_probe_accuracy'], per_layer.get('ood_probe_accuracy'), hidden
    )
  )
  if 'orthodev_per_layer' in per_layer:
    out['orthodev'] = per_layer['orthodev_per_layer'][hidden[-1]]
    out['orthodev_per_layer'] = per_layer['orthodev_per_layer']
  return out
