"""The training set held on the accelerator, and each step's batch drawn there.

With `config.input_on_device` (datasets held in memory: CIFAR-10/100, MNIST, SVHN,
Tiny-ImageNet 32x32, digits; augment 'cifar' or 'none') the train split is put on the
devices once as uint8, and the batch of every step is a pure function of (key, step), drawn
inside the jitted step (`steps.train_steps`): no host work per step, and a resumed run
needs nothing but the step its checkpoint holds.

- `load_device_dataset(config, mesh)`: the host arrays of the grain path's train source
  (`input_pipeline.train_source`: the in-memory uint8 arrays of data/memory.py, the same
  `train_subset`), brought to the geometry the grain path gives every record before its
  random ops (`augment.fit_to_size`: grey -> RGB, MNIST zero-padded to 32, other sizes
  resized), then placed: replicated on every device when it fits (`replicate_limit`),
  else its rows sharded over the mesh's `data` axis (padded to a multiple of the devices;
  XLA then gathers each batch with a masked local gather and one all-reduce of the batch).
- `data_key(seed)`: the run's data-stream key, from config.seed only.
- `device_batch(dataset, key, step, ...)`: step `step`'s batch. Epoch e = step //
  steps_per_epoch (N // batch_size, the remainder dropped as the grain path drops it) is a
  permutation of the N examples keyed by fold_in(fold_in(key, SHUFFLE_STREAM), e): a
  6-round Feistel network over [0, 4^k) whose round functions hash with random 32-bit
  keys, cycle-walked down to [0, N) (grain's own index shuffle is such a bijection too). It
  costs O(batch) per step, where `jax.random.permutation` would sort all N every step
  (25 ms for 50,000 on this CPU).
  augment='cifar' is the grain path's per-record transform (`augment.random_crop_with_padding`
  with padding 4 and zero fill, then `augment.random_flip`): crop offsets (top, left) uniform
  on {0..8} each, a horizontal flip with probability 1/2, drawn from
  fold_in(fold_in(key, AUGMENT_STREAM), step); 'none' returns the images unchanged.
  Images stay uint8; the step normalises them (`DeviceDataset.normalizer`).

The sampling half (`data_key`, `device_batch`) is jax only, so `training/steps.py` can
import it without grain; `load_device_dataset` imports the input pipeline when called.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from rankdeficit.data import device_preprocess

AUGMENTS = ('cifar', 'none')  # what device_batch draws; imagenet/vit need the host pipeline
CROP_PADDING = 4  # augment='cifar': torchvision RandomCrop(32, padding=4), zero fill
# Replicated when the dataset takes at most this many bytes (and at most
# DEVICE_MEMORY_FRACTION of a device's memory where the backend reports it), else rows are
# sharded over `data`. Every supported dataset fits replicated (CIFAR-10: 150 MB; MNIST at
# 32x32x3: 184 MB; Tiny-ImageNet 32x32: 307 MB): sharding is for larger train sets or small
# devices, at the price of one all-reduce of each batch.
REPLICATE_MAX_BYTES = 2 * 2**30
DEVICE_MEMORY_FRACTION = 0.25
DATA_STREAM = 0x64617461  # 'data': the data key is independent of the init/dropout keys
SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1
FEISTEL_ROUNDS = 6


@flax.struct.dataclass
class DeviceDataset:
  """The (train_subset of the) train split on the devices.

  Attributes:
    images: uint8 [R, H, W, C] at the model's input size; R >= num_examples (rows beyond
      num_examples pad a row-sharded placement to a multiple of the devices).
    labels: int32 [R].
    num_examples: N, the examples the epochs permute (None: all rows).
    mean, std: the training set's per-channel statistics in [0, 1] units (None: unknown;
      then the step needs an explicit `preprocess`).
  """

  images: jax.Array
  labels: jax.Array
  num_examples: int | None = flax.struct.field(pytree_node=False, default=None)
  mean: tuple | None = flax.struct.field(pytree_node=False, default=None)
  std: tuple | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def size(self) -> int:
    """N: the examples one epoch covers (before dropping the last partial batch)."""
    return int(self.labels.shape[0] if self.num_examples is None else self.num_examples)

  def normalizer(self) -> device_preprocess.DeviceNormalize | None:
    """What the train step applies to this dataset's uint8 batches (None: unknown stats)."""
    if self.mean is None:
      return None
    return device_preprocess.DeviceNormalize(tuple(self.mean), tuple(self.std))


def data_key(seed: int) -> jax.Array:
  """The run's data-stream key: from `seed` only, so a resumed run needs just its step."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), DATA_STREAM)


def device_batch(
  dataset: DeviceDataset,
  key: jax.Array,
  step: jax.Array,
  *,
  batch_size: int,
  augment: str,
  sharding: jax.sharding.Sharding | None = None,
) -> dict[str, jax.Array]:
  """{'image': uint8 [B, H, W, C], 'label': int32 [B]} of global step `step` (see the
  module docstring). Pure and jittable; vmappable over `key` and `step`. `sharding`
  (e.g. the mesh's data sharding) places the batch's indices and result."""
  if augment not in AUGMENTS:
    raise ValueError(f'device_batch draws augment in {AUGMENTS}, not {augment!r}.')
  n = dataset.size
  steps_per_epoch = n // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{n} examples are fewer than one batch of {batch_size}.')
  step = jnp.asarray(step, jnp.int32)
  epoch, position = step // steps_per_epoch, step % steps_per_epoch
  epoch_key = jax.random.fold_in(jax.random.fold_in(key, SHUFFLE_STREAM), epoch)
  positions = position * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
  indices = permute(epoch_key, positions, n)
  if sharding is not None:
    indices = jax.lax.with_sharding_constraint(indices, sharding)
  images = jnp.take(dataset.images, indices, axis=0)
  labels = jnp.take(dataset.labels, indices, axis=0)
  if augment == 'cifar':
    step_key = jax.random.fold_in(jax.random.fold_in(key, AUGMENT_STREAM), step)
    images = pad_crop_flip(step_key, images, CROP_PADDING)
  batch = {'image': images, 'label': labels}
  if sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, sharding)
  return batch


def _feistel_bits(n: int) -> int:
  """Bits of each half of the Feistel domain [0, 4^k), the smallest that holds n."""
  return max(1, (max(int(n) - 1, 1).bit_length() + 1) // 2)


def _mix(x: jax.Array) -> jax.Array:
  """A uint32 hash with full avalanche (MurmurHash3's finaliser, fmix32)."""
  x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _feistel(x: jax.Array, round_keys: jax.Array, half: int) -> jax.Array:
  """A bijection of [0, 4^half): FEISTEL_ROUNDS rounds whose round functions hash the right
  half with that round's random 32-bit key (a Feistel network is a bijection whatever its
  round functions; keyed hashes make it a pseudo-random one)."""
  mask = jnp.uint32((1 << half) - 1)
  left, right = x >> half, x & mask
  for r in range(FEISTEL_ROUNDS):
    left, right = right, left ^ (_mix(right ^ round_keys[r]) & mask)
  return (left << half) | right


def permute(key: jax.Array, positions: jax.Array, n: int) -> jax.Array:
  """The examples at `positions` (int [B], each < n) of the random permutation of [0, n)
  that `key` chooses; int32 [B]. Cycle-walks the Feistel bijection until it lands in [0, n)
  (expected < 4 rounds of the network; a bijection of [0, n) because the walk follows the
  cycles of one of [0, 4^k))."""
  half = _feistel_bits(n)
  round_keys = jax.random.bits(key, (FEISTEL_ROUNDS,), jnp.uint32)
  step = lambda x: _feistel(x, round_keys, half)
  x = step(positions.astype(jnp.uint32))
  x = jax.lax.while_loop(lambda x: jnp.any(x >= n), lambda x: jnp.where(x >= n, step(x), x), x)
  return x.astype(jnp.int32)


def pad_crop_flip(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Per image: a random HxW crop of the image zero-padded by `padding` (offsets uniform on
  {0..2 padding} each), then a horizontal flip with probability 1/2; one gather."""
  b, h, w, _ = images.shape
  top_key, left_key, flip_key = jax.random.split(key, 3)
  top = jax.random.randint(top_key, (b, 1), 0, 2 * padding + 1)
  left = jax.random.randint(left_key, (b, 1), 0, 2 * padding + 1)
  flip = jax.random.bernoulli(flip_key, 0.5, (b, 1))
  cols = jnp.where(flip, jnp.arange(w)[::-1], jnp.arange(w))
  rows = top - padding + jnp.arange(h)  # source rows [B, H] of the unpadded image
  cols = left - padding + cols  # source columns [B, W], flipped where drawn
  inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
  crops = images[
    jnp.arange(b)[:, None, None],
    jnp.clip(rows, 0, h - 1)[:, :, None],
    jnp.clip(cols, 0, w - 1)[:, None, :],
  ]
  return jnp.where(inside[..., None], crops, jnp.zeros((), images.dtype))


def host_arrays(config) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, S, S, 3], int32 [N]): the grain path's train records (train_subset
  applied) at S = config.image_size, before its random ops."""
  # The input pipeline (grain, Pillow) is imported here, not at module level: steps.py
  # imports this module and stays free of it.
  from rankdeficit.data import augment as augment_lib  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import memory  # pylint: disable=import-outside-toplevel

  source = input_pipeline.train_source(config)
  if isinstance(source, memory.InMemorySource):
    images, labels = source.images, source.labels
  else:  # a train_subset view, digits, or a split not held in memory
    records = [source[i] for i in range(len(source))]
    images = np.stack([augment_lib.to_uint8_hwc(r['image']) for r in records])
    labels = np.asarray([int(r['label']) for r in records])
  size = config.image_size
  if images.shape[1:3] == (size, size):
    images = images if images.shape[-1] == 3 else np.stack([augment_lib.to_rgb(x) for x in images])
  else:
    variable = datasets.get_spec(config.dataset).variable_size
    images = np.stack([augment_lib.fit_to_size(x, size, variable_size=variable) for x in images])
  return np.ascontiguousarray(images, np.uint8), np.asarray(labels, np.int32)


def replicate_limit(devices) -> int:
  """The most bytes a dataset may take to be replicated on every one of `devices`."""
  limit = REPLICATE_MAX_BYTES
  for device in devices:
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if stats and stats.get('bytes_limit'):
      limit = min(limit, int(DEVICE_MEMORY_FRACTION * stats['bytes_limit']))
  return limit


def load_device_dataset(
  config, mesh: jax.sharding.Mesh | None = None, *, replicate_max_bytes: int | None = None
) -> DeviceDataset:
  """`config`'s train split on the devices of `mesh` (None: the default device), once.

  Replicated when its bytes are at most `replicate_max_bytes` (default:
  `replicate_limit(mesh devices)`), else rows sharded over the mesh's `data` axis. Every
  process passes the whole array (each process holds the whole train split in memory).
  """
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  images, labels = host_arrays(config)
  spec = datasets.get_spec(config.dataset)
  meta = dict(num_examples=len(labels), mean=tuple(spec.mean), std=tuple(spec.std))
  if mesh is None:
    device = jax.devices()[0]
    return DeviceDataset(jax.device_put(images, device), jax.device_put(labels, device), **meta)
  devices = mesh.devices.size
  limit = replicate_limit(mesh.devices.flat) if replicate_max_bytes is None else replicate_max_bytes
  if images.nbytes <= limit:
    sharding = NamedSharding(mesh, P())
  else:
    sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
    pad = -len(labels) % devices
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)])
    labels = np.concatenate([labels, np.zeros((pad,), np.int32)])
  place = lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return DeviceDataset(place(images), place(labels), **meta)


def is_replicated(dataset: DeviceDataset) -> bool:
  """Whether every device holds the whole dataset."""
  return bool(dataset.images.sharding.is_fully_replicated)
