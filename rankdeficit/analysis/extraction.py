"""Feature extraction: a model's per-layer representations (a fixed random subset of <=
`max_dims` coordinates per layer) on every split a run's analysis reads, gathered across
processes.

`extract_features` streams one eval iterator through the model and keeps each layer's
coordinate subset (`layer_coordinates`, `select_coordinates`). `extract_splits` streams a
trained model over ID test/train and, with an OOD set, OOD test/train and the NECO detection
split (`split_sources`), the subsets drawn once on ID test and reused for every split so that
probes and OrthoDev compare the same coordinates. Each process extracts a contiguous block of
every split; the blocks are all-gathered so every process holds the whole split. The final
layer is added before (`logits`) and after (`softmax`, at the run's final T) the softmax, as
the paper probes it (A.5).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.analysis import probe_layers
from rankdeficit.metrics import spectral
from rankdeficit.run import distributed


class Features(NamedTuple):
  """Representations of one eval pass (padding rows dropped), on the host.

  reps: {layer: float32 [n, k]} the fixed coordinate subset (k <= max_dims) of each layer's
    flattened representation, forward order; logits: float32 [n, C]; labels: int32 [n];
    coords: {layer: int array [k]} indices of the kept coordinates in the flattened layer
    (identical for every dataset extracted with the same key and model).
  """

  reps: dict[str, np.ndarray]
  logits: np.ndarray
  labels: np.ndarray
  coords: dict[str, np.ndarray]


def select_coordinates(dim: int, max_dims: int | None, key: jax.Array) -> np.ndarray:
  """Sorted indices of a fixed random subset of min(dim, max_dims) coordinates (all if fewer).

  Host wrapper of `metrics.spectral.feature_subset_indices` (same key -> same subset as
  `metrics.representation_rank(..., key=key)`); `max_dims` None or <= 0 keeps every coordinate.
  """
  if max_dims is None or max_dims <= 0 or dim <= max_dims:
    return np.arange(dim, dtype=np.int32)
  return np.asarray(spectral.feature_subset_indices(dim, max_dims, key)).astype(np.int32)


def _rep_shapes(model, variables, image_shape: Sequence[int]) -> dict[str, jax.ShapeDtypeStruct]:
  """Each layer's representation shape for one example, from shapes only (nothing runs)."""
  return jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False),
    variables,
    jax.ShapeDtypeStruct((1, *image_shape), jnp.float32),
  )[1]


def layer_coordinates(
  model,
  variables,
  image_shape: Sequence[int],
  *,
  max_dims: int | None,
  key: jax.Array,
  layers: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
  """The coordinate subset of every (selected) layer; layer i uses fold_in(key, i)."""
  rep_shapes = _rep_shapes(model, variables, image_shape)
  names = list(rep_shapes)
  if layers is not None:
    missing = [l for l in layers if l not in rep_shapes]
    if missing:
      raise KeyError(f'unknown layers {missing}; the model has {names}')
  coords = {}
  for i, name in enumerate(names):
    if layers is not None and name not in layers:
      continue
    dim = int(np.prod(rep_shapes[name].shape[1:]))
    coords[name] = select_coordinates(dim, max_dims, jax.random.fold_in(key, i))
  return coords


@functools.partial(jax.jit, static_argnums=0)
def _apply_and_select(model, variables, images, dev_coords):
  """Logits and each layer's coordinate subset, in float32. One compiled program per model
  and set of layers, shared by every split and every extraction of an analysis."""
  logits, reps = model.apply(variables, images, train=False)
  sel = {
    k: jnp.take(reps[k].reshape(reps[k].shape[0], -1), c, axis=1).astype(jnp.float32)
    for k, c in dev_coords.items()
  }
  return logits.astype(jnp.float32), sel


def _kept_rows(batch: Mapping[str, np.ndarray], size: int, room: int | None) -> np.ndarray:
  """Indices of the batch's real rows (`mask`), at most `room` of them (None: all)."""
  mask = np.asarray(batch.get('mask', np.ones(size, bool)), bool)
  keep = np.flatnonzero(mask)
  return keep if room is None else keep[: max(0, room)]


def _concatenate(parts: list[tuple], coords: dict[str, np.ndarray]) -> Features:
  """One `Features` from the per-batch (logits, labels, {layer: rows}) parts."""
  return Features(
    reps={k: np.concatenate([p[2][k] for p in parts]) for k in coords},
    logits=np.concatenate([p[0] for p in parts]),
    labels=np.concatenate([p[1] for p in parts]),
    coords=dict(coords),
  )


def extract_features(
  model,
  variables,
  batches: Iterable[Mapping[str, np.ndarray]],
  *,
  layers: Sequence[str] | None = None,
  max_dims: int | None = 10_000,
  key: jax.Array | None = None,
  coords: Mapping[str, np.ndarray] | None = None,
  max_examples: int | None = None,
) -> Features:
  """Streams an eval iterator through the model and keeps a coordinate subset of each layer.

  One jitted apply per batch (train=False) that flattens every representation and gathers
  the fixed coordinate subset *on the device*, so only `batch x max_dims` values per layer
  ever leave it (a ResNet-50 on ImageNet never materialises all activations on the host).
  Rows whose `mask` is False (padding of the last eval batch) are dropped.

  Args:
    model, variables: a `rankdeficit.models` module and its variables.
    batches: iterable of {"image", "label", optional "mask"} numpy batches.
    layers: names of the layers to keep (default all, forward order).
    max_dims: at most this many coordinates per layer (paper: 10,000; None = all).
    key: selects the coordinate subsets (default PRNGKey(0)); ignored when `coords` is given.
    coords: explicit {layer: indices} to reuse the subsets of another extraction.
    max_examples: stop after this many real examples.
  """
  key = jax.random.PRNGKey(0) if key is None else key
  variables = jax.device_put(variables)  # once, not per batch (load_run returns numpy)
  parts, dev_coords, count = [], None, 0
  for batch in batches:
    images = np.asarray(batch['image'], np.float32)
    if dev_coords is None:  # the first batch fixes the layers and their coordinates
      if coords is None:
        coords = layer_coordinates(
          model, variables, images.shape[1:], max_dims=max_dims, key=key, layers=layers
        )
      coords = {k: np.asarray(v, np.int32) for k, v in coords.items()}
      dev_coords = {k: jnp.asarray(v) for k, v in coords.items()}
    logits, sel = jax.device_get(
      _apply_and_select(model, variables, jnp.asarray(images), dev_coords)
    )
    room = None if max_examples is None else max_examples - count
    keep = _kept_rows(batch, len(images), room)
    count += len(keep)
    labels = np.asarray(batch['label']).astype(np.int32)[keep]
    parts.append((np.asarray(logits)[keep], labels, {k: np.asarray(sel[k])[keep] for k in coords}))
    if max_examples is not None and count >= max_examples:
      break
  if dev_coords is None:
    raise ValueError('the batch iterator was empty')
  return _concatenate(parts, coords)


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
    extract_features(model, variables, batches, max_dims=max_dims, key=key, coords=coords)
  )


def _gather_processes(features: Features) -> Features:
  """The whole split on every process: each one extracted a contiguous block of it."""
  layers = list(features.reps)
  logits, labels, reps = distributed.allgather_rows(
    (features.logits, features.labels, [features.reps[l] for l in layers])
  )
  return features._replace(logits=logits, labels=labels, reps=dict(zip(layers, reps)))


def _with_final_layers(features: Features, temperature: float) -> Features:
  """Adds the final layer pre- and post-softmax (`logits`, `softmax`) as probed layers."""
  final = probe_layers.final_layer_features(features.logits, temperature)
  coords = dict(features.coords)
  for name in final:
    coords[name] = np.arange(features.logits.shape[1], dtype=np.int32)
  return features._replace(reps={**features.reps, **final}, coords=coords)


def split_sources(
  config, *, max_examples: int | None, max_train_examples: int | None
) -> dict[str, tuple[str, str, int | None]]:
  """{split name: (dataset, tfds split, example cap)} of every split an analysis reads, in
  extraction order: ID test/train and, with an OOD set, OOD test/train and, when
  `ood_detection_dataset` is another dataset, its test split (`det_test`)."""
  n_train = max_train_examples or max_examples
  out = {
    'id_test': (config.dataset, 'test', max_examples),
    'id_train': (config.dataset, 'train', n_train),
  }
  ood = config.ood_dataset or ''
  if ood:
    out['ood_test'] = (ood, 'test', max_examples)
    out['ood_train'] = (ood, 'train', n_train)
    detection = config.ood_detection_dataset or ood
    if detection != ood:
      out['det_test'] = (detection, 'test', max_examples)
  return out


_TIMER_NAMES = {
  'id_test': 'extract_id_test',
  'id_train': 'extract_id_train',
  'ood_test': 'extract_ood_test',
  'ood_train': 'extract_ood_train',
  'det_test': 'extract_detection_test',
}


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
) -> dict[str, Features]:
  """Features of ID test/train and, with an OOD set, OOD test/train and the NECO
  detection set (`det_test`, the OOD test split unless `ood_detection_dataset` differs).

  Every split uses the coordinate subsets drawn on ID test (or the given `coords`, which
  also selects the layers: `layer_coordinates` with the same `key` draws the same
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
  sources = split_sources(config, max_examples=max_examples, max_train_examples=max_train_examples)
  splits = {}
  for name, (dataset, split, cap) in sources.items():
    with timer(_TIMER_NAMES[name]):
      splits[name] = _extract(dataset=dataset, split=split, coords=coords, max_examples=cap, **ex)
    coords = splits['id_test'].coords  # ID test's subsets for every other split
  if 'ood_test' in splits:
    splits.setdefault('det_test', splits['ood_test'])
  return {k: _with_final_layers(v, temperature) for k, v in splits.items()}


def full_dims(model, variables, image_shape: Sequence[int], layers) -> dict[str, int]:
  """Flattened width of each of `layers` (before the coordinate subset), from shapes only."""
  rep_shapes = _rep_shapes(model, variables, image_shape)
  return {l: int(np.prod(rep_shapes[l].shape[1:])) for l in layers}
