"""Input pipeline on real images (offline import of ../shared/data) and on in-memory digits."""

import collections

import numpy as np
import pytest

from configs import base
from rankdeficit.data import datasets
from rankdeficit.data import input_pipeline as ip


def _config(data_dir, dataset='cifar10_jpeg', **kw):
  c = base.get_config()
  c.dataset, c.data_dir, c.batch_size, c.augment = dataset, data_dir, 32, 'cifar'
  for k, v in kw.items():
    c[k] = v
  return c


def test_dataset_info_real(local_data_dir):
  info = ip.dataset_info('cifar10_jpeg', local_data_dir)
  assert info == ip.DatasetInfo('cifar10_jpeg', 10, 2000, 500, (32, 32, 3))
  assert ip.dataset_info('mnist', local_data_dir).image_shape == (28, 28, 1)
  assert ip.dataset_info('tiny_imagenet32', local_data_dir).num_classes == 200


def test_imported_cifar10_matches_pillow_decode(local_data_dir, shared_data):
  import io
  import zipfile

  from PIL import Image

  source = datasets.open_source('cifar10_jpeg', 'train', local_data_dir)
  with zipfile.ZipFile(shared_data / 'cifar10_jpeg.zip') as z:
    first = z.read('cifar10/train_canonical_order.txt').decode().split()[0]
    expected = np.asarray(Image.open(io.BytesIO(z.read('cifar10/' + first))).convert('RGB'))
  assert first.startswith('train/frog/')  # canonical CIFAR-10 train image 0 is a frog
  np.testing.assert_array_equal(source[0]['image'], expected)
  assert int(source[0]['label']) == 6


def test_train_batches_shape_and_determinism(local_data_dir):
  config = _config(local_data_dir)
  a, b = ip.create_train_iterator(config, seed=3), ip.create_train_iterator(config, seed=3)
  for _ in range(2):
    x, y = next(a), next(b)
    assert x['image'].shape == (32, 32, 32, 3) and x['image'].dtype == np.float32
    assert x['label'].shape == (32,) and x['label'].dtype == np.int32
    np.testing.assert_array_equal(x['image'], y['image'])
  other = next(ip.create_train_iterator(config, seed=4))
  assert not np.array_equal(other['label'], x['label'])


def test_epochs_reshuffled_and_complete(local_data_dir):
  config = _config(local_data_dir, train_subset=96, augment='none')
  assert ip.steps_per_epoch(config) == 3
  it = ip.create_train_iterator(config, seed=0)
  source = datasets.open_source('cifar10_jpeg', 'train', local_data_dir)
  epoch_labels = []
  for _ in range(2):
    labels = np.concatenate([next(it)['label'] for _ in range(3)])
    epoch_labels.append(labels)
    expected = sorted(int(source[i]['label']) for i in range(96))
    assert sorted(labels.tolist()) == expected  # every subset example once per epoch
  assert not np.array_equal(epoch_labels[0], epoch_labels[1])


def test_train_subset_of_a_class_sorted_split_keeps_every_class(local_data_dir):
  # tiny_imagenet32 stores its records class by class: a prefix would hold few classes.
  source = datasets.open_source('tiny_imagenet32', 'train', local_data_dir)
  first = {int(source[i]['label']) for i in range(400)}
  assert len(first) < 100  # the stored order is by class, so the test can fail
  config = _config(
    local_data_dir, 'tiny_imagenet32', train_subset=400, augment='none', batch_size=400
  )
  labels = next(ip.create_train_iterator(config, seed=0))['label']
  assert len(set(labels.tolist())) == 200
  # Unsorted splits keep their first N (the runs recorded so far used those).
  np.testing.assert_array_equal(datasets.subset_indices('cifar10_jpeg', 2000, 96), np.arange(96))


def test_iterator_state_round_trip(local_data_dir):
  config = _config(local_data_dir)
  it = ip.create_train_iterator(config, seed=0)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = next(it)
  fresh = ip.create_train_iterator(config, seed=0)
  fresh.set_state(state)
  got = next(fresh)
  np.testing.assert_array_equal(got['image'], expected['image'])
  np.testing.assert_array_equal(got['label'], expected['label'])


@pytest.mark.parametrize('num_examples,shuffle_seed', [(None, None), (130, None), (77, 5)])
def test_eval_each_example_once(local_data_dir, num_examples, shuffle_seed):
  config = _config(local_data_dir)
  source = datasets.open_source('cifar10_jpeg', 'test', local_data_dir)
  idx = ip.eval_indices(len(source), num_examples=num_examples, shuffle_seed=shuffle_seed)
  batches = list(
    ip.create_eval_iterator(
      config,
      'cifar10_jpeg',
      'test',
      batch_size=64,
      num_examples=num_examples,
      shuffle_seed=shuffle_seed,
    )
  )
  assert all(b['image'].shape == (64, 32, 32, 3) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])[mask]
  assert mask.sum() == len(idx) and len(batches) == -(-len(idx) // 64)
  assert collections.Counter(labels.tolist()) == collections.Counter(
    int(source[i]['label']) for i in idx
  )
  assert np.all(np.concatenate([b['image'] for b in batches])[~mask] == 0)


def test_ood_eval_uses_training_normalisation_and_size(local_data_dir):
  config = _config(local_data_dir)
  batch = next(iter(ip.create_eval_iterator(config, 'mnist', 'test', batch_size=10)))
  assert batch['image'].shape == (10, 32, 32, 3)
  image = batch['image'][0]
  mean, std = datasets.CIFAR10_STATS
  # 2-pixel zero border (MNIST 28 -> 32), normalised with CIFAR-10's stats, grey x3.
  np.testing.assert_allclose(image[0, 0], -np.array(mean) / np.array(std), rtol=1e-5)
  np.testing.assert_allclose(
    image[..., 0] * std[0] + mean[0], image[..., 1] * std[1] + mean[1], atol=1e-5
  )


def test_eval_process_shards_disjoint_and_cover(local_data_dir):
  config = _config(local_data_dir)
  src = datasets.open_source('cifar10_jpeg', 'test', local_data_dir)
  idx = ip.eval_indices(len(src), num_examples=101)
  parts = [ip.host_shard(idx, 8, p, 3) for p in range(3)]
  assert len({length for _, length in parts}) == 1
  np.testing.assert_array_equal(np.concatenate([part for part, _ in parts]), idx)
  runs = [
    list(
      ip._eval_iterator(
        config,
        'cifar10_jpeg',
        'test',
        batch_size=24,
        num_examples=101,
        shuffle_seed=None,
        process_index=p,
        process_count=3,
      )
    )
    for p in range(3)
  ]
  assert len({len(r) for r in runs}) == 1  # same number of batches on every host
  assert all(b['image'].shape[0] == 8 for r in runs for b in r)
  labels = np.concatenate([b['label'][b['mask']] for r in runs for b in r])
  np.testing.assert_array_equal(labels, [int(src[i]['label']) for i in idx])


def test_small_eval_subset_is_read_without_decoding_the_split(local_data_dir, monkeypatch):
  # An analysis of 100 of 2,000 train images must not decode all 2,000 into memory first,
  # and must see exactly the records the in-memory path serves.
  from rankdeficit.data import memory  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(memory, '_CACHE', {})
  config = _config(local_data_dir)

  def subset():
    return list(
      ip.create_eval_iterator(
        config, 'cifar10_jpeg', 'train', batch_size=32, num_examples=100, shuffle_seed=0
      )
    )

  lazy = subset()
  assert not datasets.is_decoded_in_memory('cifar10_jpeg', 'train', local_data_dir)
  list(
    ip.create_eval_iterator(config, 'cifar10_jpeg', 'train', batch_size=500, num_examples=1000)
  )  # a large subset decodes the split
  assert datasets.is_decoded_in_memory('cifar10_jpeg', 'train', local_data_dir)
  held = subset()
  assert len(lazy) == len(held) == 4
  for a, b in zip(lazy, held):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(a[key], b[key])


def test_train_process_shards_disjoint_and_cover(local_data_dir):
  config = _config(local_data_dir, train_subset=90, augment='none', batch_size=30)
  src = datasets.open_source('cifar10_jpeg', 'train', local_data_dir)
  ids = {src[i]['image'].tobytes(): i for i in range(90)}
  mean, std = datasets.CIFAR10_STATS
  shards = []
  for p in range(3):
    it = ip._train_iterator(config, seed=0, process_index=p, process_count=3)
    images = np.concatenate([next(it)['image'] for _ in range(3)])  # one epoch: 3 x 10
    raw = np.rint((images * std + np.array(mean)) * 255).astype(np.uint8)
    shards.append({ids[r.tobytes()] for r in raw})
  assert all(len(s) == 30 for s in shards)
  assert set.union(*shards) == set(range(90))


def test_digits_without_data_dir():
  config = _config(None, dataset='digits', augment='none', batch_size=50)
  info = ip.dataset_info('digits', None)
  assert (info.num_train, info.num_test, info.num_classes) == (1438, 359, 10)
  batch = next(ip.create_train_iterator(config, seed=0))
  assert batch['image'].shape == (50, 32, 32, 3)
  n = sum(
    b['mask'].sum() for b in ip.create_eval_iterator(config, 'digits', 'test', batch_size=100)
  )
  assert n == 359


def test_missing_dataset_names_fix(tmp_path):
  for name, needle in [
    ('cifar10_jpeg', 'python -m tools.import_data cifar10_jpeg'),
    ('mnist', 'python -m tools.import_data mnist'),
    ('cifar10', 'python -m tools.import_data cifar10'),
    ('imagenet100', '--manual_dir'),
  ]:
    with pytest.raises(ip.DatasetNotFoundError, match='Fix') as e:
      ip.dataset_info(name, str(tmp_path))
    assert needle in str(e.value) and str(tmp_path) in str(e.value)
  with pytest.raises(ValueError, match='cifar10_jpeg'):
    ip.dataset_info('cifar11', str(tmp_path))


def test_ood_pairs():
  assert ip.ood_pair('cifar10') == 'svhn_cropped'
  assert ip.ood_pair('cifar100') == 'svhn_cropped'
  assert ip.ood_pair('cifar100', 'near') == 'cifar10'
  assert ip.ood_pair('imagenet2012') == 'cifar100'
  assert ip.ood_pair('cifar10_jpeg') == 'mnist'
  assert ip.ood_pair('cifar10_jpeg', 'near') == 'tiny_imagenet32'
  assert ip.ood_pair('tiny_imagenet32', 'near') == 'cifar10_jpeg'
  for name in ip.DATASET_NAMES:
    assert ip.ood_pair(name) in ip.DATASET_NAMES


def test_global_batches_do_not_depend_on_the_process_count():
  """Process slices, concatenated in process order, are the one-process batches (records,
  order and random augmentation), so a run on a pod sees the data of a run on one host."""
  config = _config(None, dataset='digits', augment='cifar', batch_size=24, image_size=8)
  one = ip._train_iterator(config, seed=3, process_index=0, process_count=1)
  parts = [ip._train_iterator(config, seed=3, process_index=p, process_count=3) for p in range(3)]
  for _ in range(65):  # 1,438 examples / 24: crosses an epoch boundary
    want = next(one)
    got = [next(p) for p in parts]
    for key in ('image', 'label'):
      np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])
