"""The train split on the device (data/device_data.py): epochs, augmentation, placement.

The augmentation is compared with the grain path's per-record 'cifar' transform
(augment.TrainTransform) on an image whose pixels name their own coordinates, so every
output tells its crop offsets and flip, and must be exactly that crop of the zero-padded
image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import base
from rankdeficit.data import augment
from rankdeficit.data import datasets
from rankdeficit.data import device_data
from rankdeficit.training import sharding

SIZE, PAD = 32, device_data.CROP_PADDING


def _config(data_dir, dataset='cifar10_jpeg', **overrides):
  c = base.get_config()
  c.dataset, c.data_dir, c.augment, c.batch_size = dataset, data_dir, 'cifar', 64
  c.update_from_flattened_dict(overrides)
  return c


def _indexed(n: int) -> device_data.DeviceDataset:
  """n tiny images whose label is their index."""
  return device_data.DeviceDataset(jnp.zeros((n, 2, 2, 3), jnp.uint8), jnp.arange(n))


def _labels(dataset, key, steps, batch_size):
  fn = jax.jit(
    jax.vmap(
      lambda s: device_data.device_batch(dataset, key, s, batch_size=batch_size, augment='none')[
        'label'
      ]
    )
  )
  return np.asarray(fn(jnp.asarray(steps)))


@pytest.mark.parametrize('n, batch_size', [(512, 64), (1000, 64), (5, 2)])
def test_every_example_once_per_epoch_in_a_new_order(n, batch_size):
  per_epoch = n // batch_size
  key = device_data.data_key(0)
  epochs = _labels(_indexed(n), key, np.arange(3 * per_epoch), batch_size)
  epochs = epochs.reshape(3, per_epoch * batch_size)
  for epoch in epochs:
    assert len(np.unique(epoch)) == len(epoch)  # each example at most once ...
    assert epoch.min() >= 0 and epoch.max() < n
  if n % batch_size == 0:  # ... and exactly once when no partial batch is dropped
    np.testing.assert_array_equal(np.sort(epochs, axis=1), np.tile(np.arange(n), (3, 1)))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_shuffle_looks_uniform():
  """Where example 0 lands over 2,000 epochs of 8: uniform (a Feistel network keyed per
  epoch; a chi-square test that a fixed or biased order fails)."""
  n, key = 8, device_data.data_key(1)
  positions = jax.jit(
    jax.vmap(
      lambda e: jnp.argmin(device_data.permute(jax.random.fold_in(key, e), jnp.arange(n), n))
    )
  )(jnp.arange(2000))
  counts = np.bincount(np.asarray(positions), minlength=n)
  assert stats.chisquare(counts).pvalue > 1e-3, counts


def _coordinate_image() -> np.ndarray:
  """uint8 [32, 32, 3]: pixel (r, c) = (r + 1, c + 1, 255), so a zero is padding."""
  r, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing='ij')
  return np.stack([r + 1, c + 1, np.full_like(r, 255)], -1).astype(np.uint8)


def _reference(image, top, left, flip) -> np.ndarray:
  """The crops [K, 32, 32, 3] of the zero-padded `image` at (top, left), flipped where
  `flip`: torchvision's RandomCrop(32, padding=4) then RandomHorizontalFlip, in numpy."""
  padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
  cols = np.where(flip[:, None], np.arange(SIZE)[::-1], np.arange(SIZE)) + left[:, None]
  rows = np.arange(SIZE) + top[:, None]
  return padded[rows[:, :, None], cols[:, None, :]]


def _decode(image, crops) -> np.ndarray:
  """(top, left, flip) of every crop [K, 32, 32, 3]; asserts each is exactly that crop."""
  centre = crops[:, 16, 16].astype(int)
  flip = crops[:, 16, 17, 1].astype(int) < centre[:, 1]
  top = centre[:, 0] - 1 - (16 - PAD)
  left = centre[:, 1] - 1 - np.where(flip, SIZE - 1 - 16 - PAD, 16 - PAD)
  np.testing.assert_array_equal(crops, _reference(image, top, left, flip))
  return np.stack([top, left, flip.astype(int)], 1)


def _device_draws(image, count: int) -> np.ndarray:
  batch = 256
  dataset = device_data.DeviceDataset(jnp.asarray(np.stack([image] * batch)), jnp.zeros(batch))
  fn = jax.jit(
    jax.vmap(
      lambda s: device_data.device_batch(
        dataset, device_data.data_key(0), s, batch_size=batch, augment='cifar'
      )['image']
    )
  )
  crops = np.asarray(fn(jnp.arange(count // batch))).reshape(-1, SIZE, SIZE, 3)
  return _decode(image, crops)


def _grain_draws(image, count: int) -> np.ndarray:
  # mean 0 and std 1/255: the normalised output is the pixel value itself.
  prep = augment.Preprocess(SIZE, (0.0,) * 3, (1 / 255,) * 3)
  transform = augment.TrainTransform('cifar', prep)
  crops = [
    transform.random_map({'image': image, 'label': 0}, np.random.default_rng(i))['image']
    for i in range(count)
  ]
  return _decode(image, np.rint(np.stack(crops)).astype(np.uint8))


def test_crop_and_flip_distribution_matches_the_grain_path():
  image, count = _coordinate_image(), 4096
  device, grain = _device_draws(image, count), _grain_draws(image, count)
  for name, column, bins in (('top', 0, 9), ('left', 1, 9), ('flip', 2, 2)):
    d = np.bincount(device[:, column], minlength=bins)
    g = np.bincount(grain[:, column], minlength=bins)
    assert len(d) == len(g) == bins, (name, d, g)  # offsets 0..8 only, both flip states
    assert stats.chisquare(d).pvalue > 1e-3, (name, d)  # uniform
    assert stats.chi2_contingency(np.stack([d, g])).pvalue > 1e-3, (name, d, g)  # same law
  assert abs(device[:, 2].mean() - 0.5) < 0.03
  # Offsets and flip independent: the 162 joint cells are uniform too.
  joint = np.bincount(device[:, 0] * 18 + device[:, 1] * 2 + device[:, 2], minlength=162)
  assert stats.chisquare(joint).pvalue > 1e-3


def test_batches_are_a_function_of_seed_and_step():
  dataset = device_data.DeviceDataset(
    jnp.asarray(np.random.default_rng(0).integers(0, 256, (200, 8, 8, 3), np.uint8)),
    jnp.arange(200),
  )
  draw = jax.jit(
    lambda key, step: device_data.device_batch(dataset, key, step, batch_size=32, augment='cifar')
  )
  a, again = draw(device_data.data_key(3), 7), draw(device_data.data_key(3), 7)
  jax.tree.map(np.testing.assert_array_equal, a, again)
  for other in (draw(device_data.data_key(3), 8), draw(device_data.data_key(4), 7)):
    assert not np.array_equal(a['image'], other['image'])
  # vmap over keys (a population of runs): member i sees its own run's stream.
  keys = jnp.stack([device_data.data_key(s) for s in (3, 4, 5)])
  stacked = jax.jit(jax.vmap(draw, in_axes=(0, None)))(keys, 7)
  for i, seed in enumerate((3, 4, 5)):
    jax.tree.map(
      lambda x, y, i=i: np.testing.assert_array_equal(x[i], y),
      stacked,
      draw(device_data.data_key(seed), 7),
    )


def test_unsupported_augment_is_refused():
  with pytest.raises(ValueError, match='augment'):
    device_data.device_batch(_indexed(8), device_data.data_key(0), 0, batch_size=4, augment='vit')


def test_host_arrays_are_the_grain_records_before_their_random_ops(local_data_dir):
  """MNIST (28x28 grey: zero-padded to 32, replicated to RGB) with a train_subset: the
  records and geometry of the grain path's source."""
  config = _config(local_data_dir, 'mnist', train_subset=300)
  images, labels = device_data.host_arrays(config)
  assert images.shape == (300, SIZE, SIZE, 3) and images.dtype == np.uint8
  source = datasets.open_source('mnist', 'train', local_data_dir)
  for i in (0, 150, 299):
    record = source[i]  # mnist is not class-sorted: the subset is the first 300
    np.testing.assert_array_equal(images[i], augment.fit_to_size(record['image'], SIZE))
    assert labels[i] == int(record['label'])


def test_replicated_and_row_sharded_placements_give_the_same_batches(local_data_dir):
  if jax.device_count() < 8:
    pytest.skip('needs XLA_FLAGS=--xla_force_host_platform_device_count=8')
  config = _config(local_data_dir, train_subset=500)  # 500 rows: padded to 504 when sharded
  mesh = sharding.create_mesh(jax.devices()[:8])
  replicated = device_data.load_device_dataset(config, mesh)
  sharded = device_data.load_device_dataset(config, mesh, replicate_max_bytes=0)
  assert device_data.is_replicated(replicated) and not device_data.is_replicated(sharded)
  assert sharded.images.shape[0] == 504 and sharded.size == replicated.size == 500
  data = sharding.data_sharded(mesh)

  def draws(dataset):
    fn = jax.jit(
      lambda d, step: device_data.device_batch(
        d, device_data.data_key(0), step, batch_size=64, augment='cifar', sharding=data
      )
    )
    return [jax.device_get(fn(dataset, s)) for s in (0, 5, 9)]

  for a, b in zip(draws(replicated), draws(sharded)):
    jax.tree.map(np.testing.assert_array_equal, a, b)
