"""Offline import: generic folder/zip/npz importer, validation of corrupt inputs."""

import zipfile

import numpy as np
from PIL import Image
import pytest

from rankdeficit.data import datasets
from rankdeficit.data import local_import


def _arrays(n=12, shape=(8, 8, 3), classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes)


def _npz(path, images, labels):
  np.savez(path, image=images, label=labels)
  return path


@pytest.mark.parametrize(
  'images,labels,msg',
  [
    (np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int64), 'uint8'),
    (np.zeros((4, 8, 8, 5), np.uint8), np.zeros(4, np.int64), 'C in'),
    (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, np.int64), '4 images but 3 labels'),
    (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 2, 10]), r'\[0, 10\)'),
    (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, -1, 2, 1]), 'labels must lie'),
    (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.float32), 'integer'),
  ],
)
def test_corrupt_arrays_rejected_with_file_named(tmp_path, images, labels, msg):
  path = _npz(tmp_path / 'bad_train.npz', images, labels)
  with pytest.raises(local_import.DataImportError, match=msg) as e:
    local_import.read_npz(path, num_classes=10)
  assert 'bad_train.npz' in str(e.value)


def test_truncated_npz_rejected(tmp_path):
  path = tmp_path / 'broken.npz'
  path.write_bytes(b'PK\x03\x04 definitely not a zip')
  with pytest.raises(local_import.DataImportError, match='broken.npz'):
    local_import.read_npz(path)
  with pytest.raises(local_import.DataImportError, match=r"missing arrays \['label'\]"):
    np.savez(tmp_path / 'nolabel.npz', image=np.zeros((2, 4, 4, 3), np.uint8))
    local_import.read_npz(tmp_path / 'nolabel.npz')


def test_generic_npz_import_round_trip(tmp_path):
  images, labels = _arrays()
  train = _npz(tmp_path / 'train.npz', images, labels)
  test = _npz(tmp_path / 'test.npz', images[:5], labels[:5])
  local_import.import_generic('my_set', str(tmp_path / 'tfds'), {'train': train, 'test': test})
  src = datasets.tfds_data_source('my_set', 'train', str(tmp_path / 'tfds'))
  assert len(src) == 12
  for i in range(12):
    np.testing.assert_array_equal(src[i]['image'], images[i])
    assert int(src[i]['label']) == labels[i]


def test_generic_folder_and_zip_import(tmp_path):
  images, labels = _arrays(n=6, classes=2)
  root = tmp_path / 'imgs'
  for i, (im, lab) in enumerate(zip(images, labels)):
    (root / f'class_{lab}').mkdir(parents=True, exist_ok=True)
    Image.fromarray(im).save(root / f'class_{lab}' / f'{i:03d}.png')
  zpath = tmp_path / 'imgs.zip'
  with zipfile.ZipFile(zpath, 'w') as z:
    for f in sorted(root.rglob('*.png')):
      z.write(f, 'imgs/' + str(f.relative_to(root)))
  local_import.import_generic('folder_set', str(tmp_path / 'tfds'), {'train': root, 'test': zpath})
  for split in ('train', 'test'):
    src = datasets.tfds_data_source('folder_set', split, str(tmp_path / 'tfds'))
    got = sorted((int(src[i]['label']), src[i]['image'].tobytes()) for i in range(len(src)))
    want = sorted((int(l), im.tobytes()) for im, l in zip(images, labels))
    assert got == want


def test_folder_with_corrupt_image_named(tmp_path):
  root = tmp_path / 'imgs'
  (root / 'a').mkdir(parents=True)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'a' / 'ok.png')
  (root / 'a' / 'zz_bad.png').write_bytes(b'not a png')
  with pytest.raises(local_import.DataImportError, match='zz_bad.png'):
    local_import.import_generic('bad_folder', str(tmp_path / 'tfds'), {'train': root})


def test_mismatched_split_shapes_rejected(tmp_path):
  a, la = _arrays(shape=(8, 8, 3))
  b, lb = _arrays(shape=(9, 9, 3))
  with pytest.raises(local_import.DataImportError, match='test.npz'):
    local_import.import_generic(
      'mixed',
      str(tmp_path / 'tfds'),
      {'train': _npz(tmp_path / 'train.npz', a, la), 'test': _npz(tmp_path / 'test.npz', b, lb)},
    )


def test_builtin_name_rejected(tmp_path):
  with pytest.raises(ValueError, match='built-in'):
    local_import.import_generic('cifar10', str(tmp_path), {'train': tmp_path / 'x.npz'})


def test_limit_is_evenly_spaced():
  np.testing.assert_array_equal(local_import._select(10, 4), [0, 3, 6, 9])
  np.testing.assert_array_equal(local_import._select(5, 0), np.arange(5))


def test_mnist_readable_as_tfds_mnist(local_data_dir):
  import tensorflow_datasets as tfds

  src = tfds.data_source('mnist', split='test', data_dir=local_data_dir, download=False)
  assert len(src) == 500 and src[0]['image'].shape == (28, 28, 1)
  assert int(src[0]['label']) == 7  # canonical t10k starts 7 2 1 0 4


def test_mnist_corrupt_copy_named(tmp_path):
  images = np.zeros((3, 28, 28, 1), np.uint8)
  _npz(tmp_path / 'mnist_train.npz', images, np.array([0, 1, 12]))
  _npz(tmp_path / 'mnist_test.npz', images, np.array([0, 1, 2]))
  with pytest.raises(local_import.DataImportError, match='mnist_train.npz'):
    local_import.import_mnist(str(tmp_path / 'tfds'), source=str(tmp_path))
