"""Small datasets decoded once and held in host memory as uint8 arrays.

A tfds array_record source decodes its stored PNG/JPEG on every read (220-380 us per CIFAR
image on one core), which makes a small MLP input-bound. `InMemorySource` decodes every
record once, keeps the images as one uint8 [N, H, W, C] array (CIFAR-10 train: 150 MB), and
serves the same {'image', 'label'} records, so everything downstream (grain sampler,
per-record augmentation, checkpointable iterator state) is unchanged.

Decoding happens once per (dataset, split, data_dir) and process: `in_memory_source`
memoises the result, so training, evaluation and analysis in one process share it. With
grain worker processes the array is pickled to each worker once, at start-up.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from absl import logging
import numpy as np


class InMemorySource:
  """Random-access source over decoded uint8 images and int64 labels (picklable).

  Attributes:
    images: uint8 [N, H, W, C].
    labels: int64 [N].
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, description: str):
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f'images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}.')
    if len(images) != len(labels):
      raise ValueError(f'{len(images)} images but {len(labels)} labels.')
    self.images, self.labels = images, np.asarray(labels, np.int64)
    self._description = description

  def __len__(self) -> int:
    return len(self.labels)

  def __repr__(self) -> str:
    # Grain validates repr(source) on restore: describe the data, never the object address.
    return f'InMemorySource({self._description}, n={len(self)})'

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'image': self.images[index], 'label': self.labels[index]}


def decode_all(source, description: str) -> InMemorySource:
  """Reads every record of `source` (images of one fixed shape) into an `InMemorySource`."""
  n = len(source)
  start = time.perf_counter()
  first = source[0]
  image0 = np.asarray(first['image'])
  if image0.ndim == 2:
    image0 = image0[..., None]
  images = np.empty((n,) + image0.shape, np.uint8)
  labels = np.empty((n,), np.int64)
  for i in range(n):
    record = source[i]
    images[i] = np.asarray(record['image']).reshape(image0.shape)
    labels[i] = int(record['label'])
  logging.info(
    'Decoded %s into memory: %d images %s, %.0f MB, %.1f s.',
    description,
    n,
    image0.shape,
    images.nbytes / 2**20,
    time.perf_counter() - start,
  )
  return InMemorySource(images, labels, description)


# Process-wide memo of decoded splits: decoding CIFAR-10 train takes ~15 s, and training,
# evaluation and analysis in one process read the same splits.
_CACHE: dict[tuple[str, str, str], InMemorySource] = {}


def is_decoded(name: str, split: str, data_dir: str) -> bool:
  """Whether `name`/`split` of (resolved) `data_dir` is already held by this process."""
  return (name, split, data_dir) in _CACHE


def in_memory_source(
  name: str, split: str, data_dir: str, open_fn: Callable[[], Any]
) -> InMemorySource:
  """The decoded `open_fn()` source, decoded on first use per (name, split, data_dir)."""
  key = (name, split, data_dir)
  if key not in _CACHE:
    _CACHE[key] = decode_all(open_fn(), f'{name}/{split}')
  return _CACHE[key]
