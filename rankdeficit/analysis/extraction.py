"""Features of every split a run's analysis reads, gathered across processes.

`extract_splits` streams a trained model over ID test/train and, with an OOD set, OOD
test/train and the NECO detection split, keeping a fixed random subset of <= `max_dims`
coordinates per layer (drawn once on ID test, reused for every split so that probes and
OrthoDev compare the same coordinates). Each process extracts a contiguous block of every
split; the blocks are all-gathered so every process holds the whole split. The final layer
is added before (`logits`) and after (`softmax`, at the run's final T) the softmax, as the
paper probes it (A.5).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import probes
from rankdeficit.run import distributed


def _extract(
  config,
  model,
  variables,
  dataset: str,
  split: str,
  *,
  batch_size: int,
  max_examples: int | None,
  coords,
  key,
  max_dims: int | None,
):
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  batches = input_pipeline.create_eval_iterator(
    config,
    dataset,
    split,
    batch_size=batch_size,
    num_examples=max_examples,
    shuffle_seed=0 if max_examples else None,
  )
  return _gather_processes(
    probes.extract_features(model, variables, batches, max_dims=max_dims, key=key, coords=coords)
  )


def _gather_processes(features: probes.Features) -> probes.Features:
  """The whole split on every process: each one extracted a contiguous block of it."""
  layers = list(features.reps)
  logits, labels, reps = distributed.allgather_rows(
    (features.logits, features.labels, [features.reps[l] for l in layers])
  )
  return features._replace(logits=logits, labels=labels, reps=dict(zip(layers, reps)))


def _with_final_layers(features: probes.Features, temperature: float) -> probes.Features:
  """Adds the final layer pre- and post-softmax (`logits`, `softmax`) as probed layers."""
  final = probe_layers.final_layer_features(features.logits, temperature)
  coords = dict(features.coords)
  for name in final:
    coords[name] = np.arange(features.logits.shape[1], dtype=np.int32)
  return features._replace(reps={**features.reps, **final}, coords=coords)


def extract_splits(
  config,
  model,
  variables,
  *,
  temperature: float,
  batch_size: int,
  max_examples: int | None,
  max_train_examples: int | None,
  key,
  max_dims: int,
  timer=None,
  coords=None,
) -> dict[str, probes.Features]:
  """Features of ID test/train and, with an OOD set, OOD test/train and the NECO
  detection set (`det_test`, the OOD test split unless `ood_detection_dataset` differs).

  Every split uses the coordinate subsets drawn on ID test (or the given `coords`, which
  also selects the layers: `probes.layer_coordinates` with the same `key` draws the same
  subsets), and carries the final layer pre- and post-softmax as the layers `logits` and
  `softmax`. `timer(name)`, if given, is a context manager timing each split's extraction.
  """
  timer = timer or (lambda name: contextlib.nullcontext())
  ex = dict(
    config=config,
    model=model,
    variables=variables,
    batch_size=batch_size,
    key=key,
    max_dims=max_dims,
  )
  n_train = max_train_examples or max_examples
  splits = {}
  with timer('extract_id_test'):
    splits['id_test'] = _extract(
      dataset=config.dataset, split='test', coords=coords, max_examples=max_examples, **ex
    )
  coords = splits['id_test'].coords
  with timer('extract_id_train'):
    splits['id_train'] = _extract(
      dataset=config.dataset, split='train', coords=coords, max_examples=n_train, **ex
    )
  ood = config.ood_dataset or ''
  if ood:
    with timer('extract_ood_test'):
      splits['ood_test'] = _extract(
        dataset=ood, split='test', coords=coords, max_examples=max_examples, **ex
      )
    with timer('extract_ood_train'):
      splits['ood_train'] = _extract(
        dataset=ood, split='train', coords=coords, max_examples=n_train, **ex
      )
    detection = config.ood_detection_dataset or ood
    splits['det_test'] = splits['ood_test']
    if detection != ood:
      with timer('extract_detection_test'):
        splits['det_test'] = _extract(
          dataset=detection, split='test', coords=coords, max_examples=max_examples, **ex
        )
  return {k: _with_final_layers(v, temperature) for k, v in splits.items()}


def split_rows(
  config, *, max_examples: int | None, max_train_examples: int | None
) -> dict[str, int]:
  """Rows of every split `extract_splits` reads under these caps (for the memory plan)."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  def rows(dataset, split, cap):
    info = input_pipeline.dataset_info(dataset, config.data_dir)
    n = info.num_train if split == 'train' else info.num_test
    return min(n, cap) if cap else n

  n_train = max_train_examples or max_examples
  out = {
    'id_test': rows(config.dataset, 'test', max_examples),
    'id_train': rows(config.dataset, 'train', n_train),
  }
  ood = config.ood_dataset or ''
  if ood:
    out['ood_test'] = rows(ood, 'test', max_examples)
    out['ood_train'] = rows(ood, 'train', n_train)
    detection = config.ood_detection_dataset or ood
    if detection != ood:
      out['det_test'] = rows(detection, 'test', max_examples)
  return out


def plan_layer_groups(widths: dict[str, int], rows: int, budget_bytes: int) -> list[list[str]]:
  """Consecutive layers packed so that each group's float32 features fit the budget.

  Args:
    widths: kept coordinates per layer, in forward order.
    rows: examples over all splits (`sum(split_rows(...).values())`).
    budget_bytes: host bytes the features of one group may take; <= 0 = one group.
  Returns:
    Layer groups in forward order; a layer alone over the budget is a group of its own.
  """
  groups: list[list[str]] = []
  used = 0
  for layer, width in widths.items():
    size = 4 * rows * width
    if groups and (budget_bytes <= 0 or used + size <= budget_bytes):
      groups[-1].append(layer)
      used += size
    else:
      groups.append([layer])
      used = size
  return groups


def full_dims(config, model, variables, layers) -> dict[str, int]:
  """Flattened width of each of `layers` (before the coordinate subset), from shapes only."""
  rep_shapes = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False),
    variables,
    jax.ShapeDtypeStruct((1, *config_image_shape(config)), jnp.float32),
  )[1]
  return {l: int(np.prod(rep_shapes[l].shape[1:])) for l in layers}


def config_image_shape(config) -> tuple[int, int, int]:
  """(height, width, channels) of the model input under `config`."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  return tuple(input_pipeline.input_shape(config))
