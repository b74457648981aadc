"""Input pipelines: tfds array_record sources read through grain.

Public API (docs/ARCHITECTURE.md "Data"):
- `DATASET_NAMES`, `DatasetInfo`, `DatasetNotFoundError`, `dataset_info(name, data_dir)`
- `create_train_iterator(config, *, seed)`: infinite, checkpointable grain `DataLoader`
  iterator of host-local batches {'image': float32 [B/P, H, W, 3], 'label': int32 [B/P]};
  for augment in `DEVICE_NORMALIZED_AUGMENTS` ('imagenet', 'vit') 'image' is uint8 (and
  augment='imagenet' adds its colour jitter draws 'color_factors' float32 [B/P, 3],
  'color_order' int32 [B/P, 3]); with `device_resize_canvas(config)` > 0 'image' is
  instead a uint8 [B/P, N, N, 3] crop window per example, with
  'resize_box' float32 [B/P, 4], 'resize_valid' int32 [B/P, 2] and 'flip' bool [B/P]
  (data/augment.py `decode_crop_window`): the train step finishes them on the device with
- `device_preprocess(config)`: the `DeviceNormalize` to pass to `steps.train_step`, or
  None when the train batches are float32 already (data/device_preprocess.py)
- `create_eval_iterator(config, dataset, split, *, batch_size, num_examples=None,
  shuffle_seed=None)`: one pass, every example once, last batch padded, with 'mask'
- `steps_per_epoch(config)`, `ood_pair(dataset, kind='far')`, `input_shape(config)`

Datasets (see rankdeficit/data/datasets.py for normalisation constants):
- tfds (downloaded by tfds on a connected machine): cifar10, cifar100, svhn_cropped;
  imagenet2012 (manual download) and imagenet100 (imagenet2012 restricted to the CMC list in
  rankdeficit/data/imagenet100_classes.txt, labels = index in the sorted wnid list);
  split 'test' of ImageNet is tfds' 'validation'.
- offline, imported from ../shared/data by `python -m tools.import_data NAME --data_dir=DIR`:
  cifar10_jpeg, tiny_imagenet32 ('test' = its val set), mnist (written as tfds' own 'mnist').
- digits: scikit-learn's UCI 8x8 digits, in memory (no data_dir needed).
With config.in_memory (default) every dataset but ImageNet is decoded once per process into
a uint8 array (rankdeficit/data/memory.py): same records, same iterator state, no per-read
decoding. An eval subset of <= SUBSET_READ_FRACTION of a split not yet decoded is read
record by record instead (an analysis of 2,000 MNIST train images skips decoding 60,000).
All images come out as 3-channel float32 of config.image_size, normalised with the training
set's (config.dataset's) statistics, or mean=std=0.5 with augment='vit'; only the train
batches of augment imagenet/vit are uint8, normalised the same way inside the train step.
Eval iterators (evaluation, the collapse monitor, analysis, probes) always yield float32.

Checkpointing the train iterator with orbax: `grain.checkpoint.CheckpointSave(it)` /
`grain.checkpoint.CheckpointRestore(it)` (handler `grain.checkpoint.CheckpointHandler`).
"""

from __future__ import annotations

import dataclasses
import math

from absl import flags
import grain
import jax
import numpy as np

from rankdeficit.data import augment as augment_lib
from rankdeficit.data import datasets
from rankdeficit.data import device_preprocess as device_preprocess_lib
from rankdeficit.data.datasets import DatasetNotFoundError  # noqa: F401  (re-export)

DATASET_NAMES = datasets.DATASET_NAMES
ood_pair = datasets.ood_pair


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  num_train: int
  num_test: int
  image_shape: tuple  # native stored (H, W, C); (None, None, 3) for ImageNet


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
  """Looks the dataset up (opening its sources); raises DatasetNotFoundError naming the fix."""
  spec = datasets.get_spec(name)
  train = datasets.open_source(name, 'train', data_dir)
  test = datasets.open_source(name, 'test', data_dir)
  return DatasetInfo(name, spec.num_classes, len(train), len(test), tuple(spec.image_shape))


def input_shape(config) -> tuple[int, int, int]:
  """Shape of one pipeline image: (image_size, image_size, 3)."""
  return (config.image_size, config.image_size, 3)


def _preprocess(config, dataset: str) -> augment_lib.Preprocess:
  train_spec = datasets.get_spec(config.dataset)
  mean, std = (datasets.VIT_STATS) if config.augment == 'vit' else (train_spec.mean, train_spec.std)
  return augment_lib.Preprocess(
    config.image_size, tuple(mean), tuple(std), datasets.get_spec(dataset).variable_size
  )


DEVICE_NORMALIZED_AUGMENTS = augment_lib.DEVICE_NORMALIZED


def device_preprocess(config) -> device_preprocess_lib.DeviceNormalize | None:
  """What `steps.train_step` must apply to this config's train batches (None: float32)."""
  if config.augment not in DEVICE_NORMALIZED_AUGMENTS:
    return None
  prep = _preprocess(config, config.dataset)
  return device_preprocess_lib.DeviceNormalize(prep.mean, prep.std, config.image_size)


def device_resize_canvas(config) -> int:
  """Side of the crop windows shipped for the step to resize; 0 = crops resized on the host.

  Only augment imagenet/vit ship crops. Off by default: the windows save the host ~0.3 ms
  per image (~15%) for 4x the host -> device bytes of a uint8 crop and ~0.4 GFLOP of f32
  matrix products per image in the step (7 ms on a CPU backend), so they pay only where
  host cores are what limits the input rate (tools/benchmark_input.py).
  """
  if config.augment not in DEVICE_NORMALIZED_AUGMENTS:
    return 0
  return int(config.device_resize_canvas)


def train_source(config):
  source = datasets.open_source(
    config.dataset,
    'train',
    config.data_dir,
    in_memory=config.in_memory,
    # random crops decode from the bytes (data/augment.py)
    decode=config.augment not in ('imagenet', 'vit'),
  )
  if config.train_subset and config.train_subset < len(source):
    source = datasets.IndexedSource(
      source, datasets.subset_indices(config.dataset, len(source), config.train_subset)
    )
  return source


def _local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise ValueError(f'batch size {batch_size} is not divisible by the {process_count} processes.')
  return batch_size // process_count


def steps_per_epoch(config, info: DatasetInfo | None = None) -> int:
  """Training examples (after train_subset) // global batch size; `info`: the training
  dataset's, when the caller has it (the run plan), else looked up."""
  n = (info or dataset_info(config.dataset, config.data_dir)).num_train
  if config.get('train_subset'):
    n = min(n, config.train_subset)
  steps = n // config.batch_size
  if steps == 0:
    raise ValueError(
      f'{n} training examples of {config.dataset} are fewer than one batch '
      f'(config.batch_size={config.batch_size}).'
    )
  return steps


def create_train_iterator(config, *, seed: int):
  """Infinite, per-epoch reshuffled, augmented stream of host-local batches (drop remainder).

  The returned `grain.DataLoaderIterator` supports `get_state()` / `set_state(state)`;
  reads shard `jax.process_index()` of `jax.process_count()` of the training examples.
  Per-example augmentation depends only on (seed, record); batch composition also depends
  on config.num_workers (grain splits records over workers), so resume with the same value.
  With num_workers > 0 the calling script needs an `if __name__ == '__main__':` guard.
  """
  return _train_iterator(
    config, seed=seed, process_index=jax.process_index(), process_count=jax.process_count()
  )


class GlobalBatchSliceSampler:
  """This process's slice of every global batch of one global shuffled record stream.

  Global batch b holds positions [b*B, (b+1)*B) of `base`'s stream; process p reads the
  contiguous slice [b*B + p*B/P, b*B + (p+1)*B/P). `shard_batch` concatenates the slices in
  process order, so the global batches -- records, order and per-record augmentation RNG
  (seeded by the global position) -- do not depend on the number of processes: a run on a
  pod and on one host see the same data (with num_workers=0).
  """

  def __init__(self, base, *, global_batch: int, process_index: int, process_count: int):
    self._base, self._batch = base, int(global_batch)
    self._index, self._count = int(process_index), int(process_count)
    self._local = _local_batch_size(self._batch, self._count)

  def __len__(self) -> int:
    return len(self._base) // self._count

  def __repr__(self) -> str:  # grain compares it with the checkpointed one on restore
    return (
      f'GlobalBatchSliceSampler(base={self._base!r}, global_batch={self._batch}, '
      f'process={self._index}/{self._count})'
    )

  def __getitem__(self, index: int):
    batch, offset = divmod(int(index), self._local)
    meta = self._base[batch * self._batch + self._index * self._local + offset]
    return grain.RecordMetadata(index=int(index), record_key=meta.record_key, rng=meta.rng)


def _train_iterator(config, *, seed: int, process_index: int, process_count: int):
  source = train_source(config)
  if config.num_workers and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags (outside absl.app)
  local_batch = _local_batch_size(config.batch_size, process_count)
  sampler = GlobalBatchSliceSampler(
    grain.samplers.IndexSampler(
      num_records=len(source), shuffle=True, num_epochs=None, seed=int(seed)
    ),
    global_batch=config.batch_size,
    process_index=process_index,
    process_count=process_count,
  )
  if len(source) // process_count < local_batch:
    raise ValueError(
      f'{len(source)} training examples over {process_count} processes are '
      f'fewer than one batch of {local_batch}.'
    )
  transform = augment_lib.TrainTransform(
    config.augment,
    _preprocess(config, config.dataset),
    device_normalize=config.augment in DEVICE_NORMALIZED_AUGMENTS,
    device_resize_canvas=device_resize_canvas(config),
  )
  operations = [transform, grain.transforms.Batch(local_batch, drop_remainder=True)]
  if config.in_memory and datasets.holds_in_memory(config.dataset):
    # Reads are array views: reader threads would only add futures polling (profiled).
    read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  else:
    read_options = grain.ReadOptions(num_threads=4, prefetch_buffer_size=256)
  loader = grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=operations,
    shard_options=grain.sharding.NoSharding(),  # the sampler already slices per process
    worker_count=int(config.num_workers),
    worker_buffer_size=2,
    read_options=read_options,
  )
  return iter(loader)


class _EvalSource:
  """Padded view: index i < len(indices) -> record, else a masked zero record."""

  def __init__(self, base, indices, length: int, image_shape):
    self._base, self._indices, self._length = base, np.asarray(indices, np.int64), length
    self._pad_shape = tuple(s or 1 for s in image_shape)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int):
    if i < len(self._indices):
      record = self._base[int(self._indices[i])]
      return {'image': record['image'], 'label': record['label'], 'mask': True}
    return {'image': np.zeros(self._pad_shape, np.uint8), 'label': 0, 'mask': False}


def eval_indices(
  num_records: int, *, num_examples: int | None = None, shuffle_seed: int | None = None
) -> np.ndarray:
  """Global record indices of an eval pass: all, the first `num_examples`, or a fixed random
  subset of `num_examples` (drawn with `shuffle_seed`, kept in record order)."""
  if num_examples is None or num_examples >= num_records:
    return np.arange(num_records)
  if shuffle_seed is None:
    return np.arange(num_examples)
  rng = np.random.default_rng(shuffle_seed)
  return np.sort(rng.permutation(num_records)[:num_examples])


def host_shard(
  indices: np.ndarray, local_batch: int, process_index: int, process_count: int
) -> tuple[np.ndarray, int]:
  """This host's contiguous part of `indices`, and the padded length (same on every host)."""
  bounds = np.linspace(0, len(indices), process_count + 1).round().astype(np.int64)
  largest = int(np.max(np.diff(bounds)))
  num_batches = max(1, math.ceil(largest / local_batch))
  return indices[bounds[process_index] : bounds[process_index + 1]], num_batches * local_batch


def first_test_batch(config, size: int) -> dict[str, np.ndarray]:
  """The first `size` examples of `config.dataset`'s test split as one eval batch (with
  'mask'): the fixed batch of the initial logits norm and of the collapse monitor."""
  iterator = create_eval_iterator(
    config, config.dataset, 'test', batch_size=size, num_examples=size
  )
  return next(iter(iterator))


def create_eval_iterator(
  config,
  dataset: str,
  split: str,
  *,
  batch_size: int,
  num_examples: int | None = None,
  shuffle_seed: int | None = None,
):
  """One pass over `dataset`/`split` (or a subset of `num_examples`), no augmentation.

  Yields {'image': float32 [b, H, W, 3], 'label': int32 [b], 'mask': bool [b]} with
  b = batch_size // jax.process_count() (batch_size is global, like config.eval_batch_size);
  the last batch is padded with mask=False, and every host yields the same number of
  batches. The result is re-iterable: each `iter()` starts a new pass.
  """
  return _eval_iterator(
    config,
    dataset,
    split,
    batch_size=batch_size,
    num_examples=num_examples,
    shuffle_seed=shuffle_seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )


# A subset this small is read record by record rather than decoding the whole split into
# memory first (decoding MNIST train takes ~30 s for an analysis that reads 2,000 of 60,000).
SUBSET_READ_FRACTION = 0.25


def _eval_source(config, dataset: str, split: str, num_examples: int | None):
  """The split's source; a small subset of a split not yet in memory is read lazily."""
  if (
    config.in_memory
    and num_examples is not None
    and datasets.holds_in_memory(dataset)
    and not datasets.is_decoded_in_memory(dataset, split, config.data_dir)
  ):
    lazy = datasets.open_source(dataset, split, config.data_dir, in_memory=False)
    if num_examples <= SUBSET_READ_FRACTION * len(lazy):
      return lazy
  return datasets.open_source(dataset, split, config.data_dir, in_memory=config.in_memory)


def _eval_iterator(
  config, dataset, split, *, batch_size, num_examples, shuffle_seed, process_index, process_count
):
  source = _eval_source(config, dataset, split, num_examples)
  local_batch = _local_batch_size(batch_size, process_count)
  indices = eval_indices(len(source), num_examples=num_examples, shuffle_seed=shuffle_seed)
  local, length = host_shard(indices, local_batch, process_index, process_count)
  padded = _EvalSource(source, local, length, datasets.get_spec(dataset).image_shape)
  threads = max(1, int(config.num_workers) * 2) if config.num_workers else 2
  return (
    grain.MapDataset.source(padded)
    .map(augment_lib.EvalTransform(_preprocess(config, dataset)))
    .batch(local_batch, drop_remainder=False)
    .to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * local_batch))
  )
