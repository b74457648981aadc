"""Tests of rankdeficit.analysis.extraction: coordinate subsets, feature extraction and the
splits an analysis reads."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from rankdeficit.analysis import extraction
from rankdeficit.analysis import rows


def test_select_coordinates():
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(extraction.select_coordinates(7, 10, key), np.arange(7))
  c = extraction.select_coordinates(50, 10, key)
  assert len(c) == 10 and len(set(c.tolist())) == 10 and np.all(np.diff(c) > 0)
  np.testing.assert_array_equal(c, extraction.select_coordinates(50, 10, key))  # fixed by the key


class _ToyModel:
  """Stand-in with the models' contract: apply(v, images, train) -> (logits, reps)."""

  def apply(self, variables, images, train=False):
    del train
    h1 = jax.nn.relu(images * variables['a'])  # conv-like [N, H, W, C]
    h2 = jax.nn.relu(h1.reshape(h1.shape[0], -1) @ variables['w'])
    return h2 @ variables['v'], {'conv': h1, 'fc': h2}


def _gathered(features: extraction.Features, x) -> np.ndarray:
  """The real rows of a row-sharded array in the split's order (tests only: the analysis
  never gathers features)."""
  ids = np.asarray(features.ids)
  out = np.asarray(x)[ids >= 0]
  return out[np.argsort(ids[ids >= 0])]


def _toy_batches():
  rng = np.random.default_rng(0)
  variables = {
    'a': jnp.float32(1.5),
    'w': jnp.asarray(rng.normal(size=(48, 6)), jnp.float32),
    'v': jnp.asarray(rng.normal(size=(6, 3)), jnp.float32),
  }
  images = rng.normal(size=(10, 4, 4, 3)).astype(np.float32)
  labels = np.arange(10) % 3
  batches = []
  for i in range(0, 10, 4):  # 4 + 4 + 2 real rows, last batch padded to 4
    im, lb = images[i : i + 4], labels[i : i + 4]
    m = np.ones(4, bool)
    if len(im) < 4:
      m[len(im) :] = False
      im = np.concatenate([im, np.zeros((4 - len(im), 4, 4, 3), np.float32)])
      lb = np.concatenate([lb, np.zeros(4 - len(lb), int)])
    batches.append({'image': im, 'label': lb, 'mask': m})
  return variables, images, labels, batches


def test_extract_features_masks_and_subsets():
  variables, images, labels, batches = _toy_batches()
  model = _ToyModel()
  f = extraction.extract_features(model, variables, batches, max_dims=20, key=jax.random.PRNGKey(1))
  assert list(f.reps) == ['conv', 'fc'] and f.num_examples == 10
  assert f.reps['conv'].shape[1] == 20 and f.reps['fc'].shape[1] == 6
  logits, reps = model.apply(variables, jnp.asarray(images))
  flat = np.asarray(reps['conv']).reshape(10, -1)
  np.testing.assert_allclose(_gathered(f, f.reps['conv']), flat[:, f.coords['conv']], rtol=1e-6)
  np.testing.assert_allclose(_gathered(f, f.logits), np.asarray(logits), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(_gathered(f, f.labels), labels)
  np.testing.assert_array_equal(np.sort(np.asarray(f.ids)[np.asarray(f.mask)]), np.arange(10))
  padding = ~np.asarray(f.mask)
  assert padding.sum() == len(f.ids) - 10 and not np.any(np.asarray(f.reps['fc'])[padding])
  # same key -> same coordinates on another dataset; explicit coords reuse them
  g = extraction.extract_features(
    model, variables, batches[:1], max_dims=20, key=jax.random.PRNGKey(1), layers=['conv']
  )
  np.testing.assert_array_equal(g.coords['conv'], f.coords['conv'])
  h = extraction.extract_features(model, variables, batches, coords=f.coords, max_examples=5)
  assert h.num_examples == 5 and int(np.sum(np.asarray(h.mask))) == 5


def test_extraction_keeps_the_features_sharded_on_the_devices():
  """Fails if the extraction returns host (numpy) arrays, or gathers a layer's rows onto
  one device: every layer is a global jax.Array whose rows are split over every device of
  the mesh (each holds 1/devices of them)."""
  variables, _, _, batches = _toy_batches()
  devices = jax.devices()
  f = extraction.extract_features(_ToyModel(), variables, batches)
  for x in (*f.reps.values(), f.logits, f.labels, f.ids):
    assert isinstance(x, jax.Array) and not isinstance(x, np.ndarray)
    assert x.sharding.spec == P('data') and x.sharding.mesh.devices.size == len(devices)
    shards = x.addressable_shards
    assert {s.device for s in shards} == set(devices)
    assert all(s.data.shape[0] == x.shape[0] // len(devices) for s in shards)
  final = extraction.with_final_layers(f, 2.0)
  softmax = final.reps['softmax']
  assert softmax.sharding.spec == P('data')
  np.testing.assert_allclose(
    _gathered(f, softmax), jax.nn.softmax(_gathered(f, f.logits) / 2.0), rtol=1e-6, atol=1e-7
  )
  assert rows.held_bytes(f.reps) == sum(x.nbytes for x in f.reps.values())  # one process


def test_extract_features_refuses_an_empty_iterator():
  variables = {'a': jnp.float32(1.0), 'w': jnp.ones((48, 6)), 'v': jnp.ones((6, 3))}
  with np.testing.assert_raises_regex(ValueError, 'empty'):
    extraction.extract_features(_ToyModel(), variables, [])


def test_full_dims_are_the_flattened_widths():
  variables = {'a': jnp.float32(1.0), 'w': jnp.ones((48, 6)), 'v': jnp.ones((6, 3))}
  dims = extraction.full_dims(_ToyModel(), variables, (4, 4, 3), ['conv', 'fc'])
  assert dims == {'conv': 48, 'fc': 6}


def test_split_sources_name_every_split_in_extraction_order():
  config = ml_collections.ConfigDict(
    {'dataset': 'cifar10', 'ood_dataset': 'mnist', 'ood_detection_dataset': ''}
  )
  sources = extraction.split_sources(config, max_examples=100, max_train_examples=None)
  assert sources == {
    'id_test': ('cifar10', 'test', 100),
    'id_train': ('cifar10', 'train', 100),  # max_examples caps the train splits too
    'ood_test': ('mnist', 'test', 100),
    'ood_train': ('mnist', 'train', 100),
  }  # no det_test: the detection set is the OOD test split itself
  config.ood_detection_dataset = 'svhn_cropped'
  sources = extraction.split_sources(config, max_examples=None, max_train_examples=10)
  assert list(sources) == ['id_test', 'id_train', 'ood_test', 'ood_train', 'det_test']
  assert sources['det_test'] == ('svhn_cropped', 'test', None)
  assert sources['id_train'] == ('cifar10', 'train', 10) and sources['id_test'][2] is None
  config.ood_dataset = ''
  assert list(extraction.split_sources(config, max_examples=None, max_train_examples=None)) == [
    'id_test',
    'id_train',
  ]
