"""Feature extraction: a model's per-layer representations (a fixed random subset of <=
`max_dims` coordinates per layer) on every split a run's analysis reads, kept on the
devices, rows sharded over the mesh (`analysis.rows`).

`extract_features` streams one eval iterator through the model, data-parallel over the
mesh, and keeps each layer's coordinate subset (`layer_coordinates`, `select_coordinates`)
as one global `jax.Array` per layer whose rows stay on the device that computed them: each
process holds only its own rows and no host ever holds a layer's features.
`extract_splits` streams a trained model over ID test/train and, with an OOD set, OOD
test/train and the NECO detection split (`split_sources`), the subsets drawn once on ID
test and reused for every split so that probes and OrthoDev compare the same coordinates.
The final layer is added before (`logits`) and after (`softmax`, at the run's final T) the
softmax, as the paper probes it (A.5).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import rows
from rankdeficit.metrics import spectral


class Features(NamedTuple):
  """Representations of one eval pass, rows sharded over the mesh's `data` axis.

  reps: {layer: float32 [N, k]} the fixed coordinate subset (k <= max_dims) of each layer's
    flattened representation, forward order; logits: float32 [N, C]; labels: int32 [N];
    ids: int32 [N] each row's index in the split's eval order, -1 for a padding row (whose
    features and logits are zeros); all global `jax.Array`s in the device-major row
    order of `analysis.rows`. coords: {layer: int array [k]} indices of the kept
    coordinates in the flattened layer (identical for every dataset extracted with the
    same key and model); num_examples: the real rows (ids 0 .. num_examples - 1).
  """

  reps: dict[str, jax.Array]
  logits: jax.Array
  labels: jax.Array
  ids: jax.Array
  coords: dict[str, np.ndarray]
  num_examples: int

  @property
  def mask(self) -> jax.Array:
    """[N] bool, True on real rows (sharded like the rows)."""
    return self.ids >= 0


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


@functools.partial(jax.jit, static_argnums=(0, 5))
def _apply_and_select(model, variables, images, ids, dev_coords, mesh):
  """Logits and each layer's coordinate subset, in float32, padding rows zeroed, rows
  sharded like the images. One compiled program per model and set of layers, shared by
  every split and every extraction of an analysis."""
  logits, reps = model.apply(variables, images, train=False)
  real = (ids >= 0)[:, None]
  rows_sharded = NamedSharding(mesh, P(rows.DATA_AXIS))

  def keep(x):
    x = jnp.where(real, x.astype(jnp.float32), 0.0)
    return jax.lax.with_sharding_constraint(x, rows_sharded)

  sel = {
    k: keep(jnp.take(reps[k].reshape(reps[k].shape[0], -1), c, axis=1))
    for k, c in dev_coords.items()
  }
  return keep(logits), sel


def _kept_rows(batch: Mapping[str, np.ndarray], size: int, room: int | None) -> np.ndarray:
  """Indices of the batch's real rows (`mask`), at most `room` of them (None: all)."""
  mask = np.asarray(batch.get('mask', np.ones(size, bool)), bool)
  keep = np.flatnonzero(mask)
  return keep if room is None else keep[: max(0, room)]


class _Pieces:
  """Per-batch row-sharded outputs of an extraction, joined at the end (`assemble`)."""

  def __init__(self, layers):
    self.parts = {name: [] for name in ('logits', 'labels', 'ids', *layers)}

  def add(self, **arrays):
    for name, x in arrays.items():
      self.parts[name].append(x)

  def assemble(self, coords, count: int, mesh) -> Features:
    """One `Features`; each layer's pieces are freed as soon as they are joined, so at
    most one layer is held twice."""
    joined = {name: rows.concat_blocks(self.parts.pop(name), mesh) for name in list(self.parts)}
    counts = rows.process_counts(count)
    return Features(
      reps={k: joined[k] for k in coords},
      logits=joined['logits'],
      labels=joined['labels'],
      ids=rows.offset_ids(joined['ids'], counts, mesh),
      coords=dict(coords),
      num_examples=int(counts.sum()),
    )


def _local_ids(size: int, keep: np.ndarray, start: int) -> np.ndarray:
  """This process's row ids of one batch: `start, start + 1, ...` on kept rows, else -1."""
  ids = np.full((size,), -1, np.int32)
  ids[keep] = start + np.arange(len(keep), dtype=np.int32)
  return ids


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
  mesh=None,
) -> Features:
  """Streams an eval iterator through the model and keeps a coordinate subset of each layer.

  One jitted apply per batch (train=False), data-parallel over `mesh`'s `data` axis, that
  flattens every representation and gathers the fixed coordinate subset *on the device*;
  the kept rows stay there (`Features`: global arrays sharded by rows), so no host ever
  holds a layer's features. Rows whose `mask` is False (padding of the last eval batch)
  get the id -1 and zero features.

  Args:
    model, variables: a `rankdeficit.models` module and its variables.
    batches: iterable of this process's {"image", "label", optional "mask"} numpy batches
      (`input_pipeline.create_eval_iterator`: the same number of batches on every process).
    layers: names of the layers to keep (default all, forward order).
    max_dims: at most this many coordinates per layer (paper: 10,000; None = all).
    key: selects the coordinate subsets (default PRNGKey(0)); ignored when `coords` is given.
    coords: explicit {layer: indices} to reuse the subsets of another extraction.
    max_examples: keep at most this many real examples of this process (with one process
      the iterator stops there; with several, later rows are padding, in lockstep).
    mesh: the `data` mesh (default `rows.analysis_mesh()`: every device).
  """
  key = jax.random.PRNGKey(0) if key is None else key
  mesh = rows.analysis_mesh() if mesh is None else mesh
  variables = rows.replicate(variables, mesh)  # once, not per batch
  pieces, dev_coords, count = None, None, 0
  for batch in batches:
    images = np.asarray(batch['image'], np.float32)
    if dev_coords is None:  # the first batch fixes the layers and their coordinates
      if coords is None:
        coords = layer_coordinates(
          model, variables, images.shape[1:], max_dims=max_dims, key=key, layers=layers
        )
      coords = {k: np.asarray(v, np.int32) for k, v in coords.items()}
      dev_coords, pieces = rows.replicate(coords, mesh), _Pieces(coords)
    keep = _kept_rows(batch, len(images), None if max_examples is None else max_examples - count)
    ids = rows.local_rows_to_global(mesh, _local_ids(len(images), keep, count), fill=-1)
    count += len(keep)
    logits, sel = _apply_and_select(
      model, variables, rows.local_rows_to_global(mesh, images), ids, dev_coords, mesh
    )
    labels = rows.local_rows_to_global(mesh, np.asarray(batch['label']).astype(np.int32))
    pieces.add(logits=logits, labels=labels, ids=ids, **sel)
    if max_examples is not None and count >= max_examples and jax.process_count() == 1:
      break
  if dev_coords is None:
    raise ValueError('the batch iterator was empty')
  return pieces.assemble(coords, count, mesh)


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
  mesh,
) -> Features:
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  batches = input_pipeline.create_eval_iterator(
    config,
    dataset,
    split,
    batch_size=batch_size,
    num_examples=max_examples,
    shuffle_seed=0 if max_examples else None,
  )
  return extract_features(
    model, variables, batches, max_dims=max_dims, key=key, coords=coords, mesh=mesh
  )


@jax.jit
def softmax_rows(logits, ids, temperature):
  """softmax(z / T) of each real row (float32, as `metrics.softmax_rank`); padding zero."""
  return jnp.where((ids >= 0)[:, None], jax.nn.softmax(logits / temperature, axis=-1), 0.0)


def with_final_layers(features: Features, temperature: float) -> Features:
  """Adds the final layer pre- and post-softmax (`logits`, `softmax` at `temperature`) as
  probed layers, computed on the devices."""
  if not temperature > 0:
    raise ValueError(f'temperature must be > 0, got {temperature}.')
  final = {
    probe_layers.LOGITS: features.logits,
    probe_layers.SOFTMAX: softmax_rows(features.logits, features.ids, temperature),
  }
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
  mesh=None,
) -> dict[str, Features]:
  """Features of ID test/train and, with an OOD set, OOD test/train and the NECO
  detection set (`det_test`, the OOD test split unless `ood_detection_dataset` differs).

  Every split uses the coordinate subsets drawn on ID test (or the given `coords`, which
  also selects the layers: `layer_coordinates` with the same `key` draws the same
  subsets), and carries the final layer pre- and post-softmax as the layers `logits` and
  `softmax`. `timer(name)`, if given, is a context manager timing each split's extraction.
  The features stay on `mesh`'s devices (default: every device), rows sharded.
  """
  timer = timer or (lambda name: contextlib.nullcontext())
  mesh = rows.analysis_mesh() if mesh is None else mesh
  ex = dict(
    config=config,
    model=model,
    variables=rows.replicate(variables, mesh),
    batch_size=batch_size,
    key=key,
    max_dims=max_dims,
    mesh=mesh,
  )
  sources = split_sources(config, max_examples=max_examples, max_train_examples=max_train_examples)
  splits = {}
  for name, (dataset, split, cap) in sources.items():
    with timer(_TIMER_NAMES[name]):
      splits[name] = _extract(dataset=dataset, split=split, coords=coords, max_examples=cap, **ex)
      jax.block_until_ready(splits[name])  # its time, not the next stage's
    coords = splits['id_test'].coords  # ID test's subsets for every other split
  if 'ood_test' in splits:
    splits.setdefault('det_test', splits['ood_test'])
  return {k: with_final_layers(v, temperature) for k, v in splits.items()}


def full_dims(model, variables, image_shape: Sequence[int], layers) -> dict[str, int]:
  """Flattened width of each of `layers` (before the coordinate subset), from shapes only."""
  rep_shapes = _rep_shapes(model, variables, image_shape)
  return {l: int(np.prod(rep_shapes[l].shape[1:])) for l in layers}
