"""Every tfds dataset name through the real pipeline code, with `tfds.testing.mock_data`
(random examples; data_source/array_record path; no files, no network)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from rankdeficit.data import input_pipeline as ip

CASES = [  # name, augment, image_size, num_classes
  ('cifar10', 'cifar', 32, 10),
  ('cifar100', 'cifar', 32, 100),
  ('svhn_cropped', 'none', 32, 10),
  ('mnist', 'cifar', 32, 10),
  ('imagenet2012', 'imagenet', 48, 1000),
  ('imagenet100', 'vit', 48, 100),
]


@pytest.mark.parametrize('name,augment,size,num_classes', CASES)
def test_mocked_tfds_dataset(name, augment, size, num_classes):
  n = 400 if name == 'imagenet100' else 100  # imagenet100 keeps ~10% of random labels
  config = base.get_config()
  config.dataset, config.augment, config.image_size, config.batch_size = name, augment, size, 8
  with tfds.testing.mock_data(num_examples=n):
    info = ip.dataset_info(name, None)
    assert info.num_classes == num_classes
    if name != 'imagenet100':
      assert (info.num_train, info.num_test) == (n, n)
    batch = next(ip.create_train_iterator(config, seed=0))
    assert batch['image'].shape == (8, size, size, 3)
    if augment in ip.DEVICE_NORMALIZED_AUGMENTS:  # normalised in the step
      assert batch['image'].dtype == np.uint8
    else:
      assert batch['image'].dtype == np.float32 and np.isfinite(batch['image']).all()
    assert batch['label'].min() >= 0 and batch['label'].max() < num_classes
    batches = list(ip.create_eval_iterator(config, name, 'test', batch_size=24, num_examples=30))
    assert sum(int(b['mask'].sum()) for b in batches) == min(30, info.num_test)
    assert all(b['image'].shape == (24, size, size, 3) for b in batches)


def test_imagenet100_labels_remapped():
  from rankdeficit.data import datasets

  wnids = datasets.imagenet100_wnids()
  assert len(wnids) == 100 == len(set(wnids)) and wnids == sorted(wnids)
  with tfds.testing.mock_data(num_examples=300):
    src = datasets.open_source('imagenet100', 'train', None)
    names = tfds.builder('imagenet2012').info.features['label'].names
    base = src._base  # pylint: disable=protected-access
    for i in range(len(src)):
      tfds_label = int(base[int(src._indices[i])]['label'])  # pylint: disable=protected-access
      assert names[tfds_label] in wnids
      assert int(src[i]['label']) == wnids.index(names[tfds_label])
