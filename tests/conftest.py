"""Shared pytest fixtures.

`local_data_dir` (session scope): a temporary tfds data_dir holding small real subsets of
../shared/data imported ONCE per session through the offline import path
(`rankdeficit.data.local_import`, the same code as `python -m tools.import_data`):

  - `cifar10_jpeg`:    2,000 train / 500 test CIFAR-10 JPEG images (32x32x3, 10 classes)
  - `mnist`:           1,000 train / 500 test MNIST digits (28x28x1), tfds' own name/version
  - `tiny_imagenet32`: 2,000 train / 500 test Tiny-ImageNet-200 images (32x32x3, 200 classes)

Subsets are evenly spaced through each split (class-balanced where the source is
class-sorted). Use it as `config.data_dir = local_data_dir`. The shared data folder is
`../shared/data` relative to the repo root, or $RANKDEFICIT_SHARED_DATA; tests using the
fixture are skipped (with the reason) only when that folder is absent. `digits` needs no
data_dir at all.
"""
import os
from pathlib import Path

import pytest

LOCAL_DATA_LIMITS = {
    'cifar10_jpeg': (2000, 500),
    'mnist': (1000, 500),
    'tiny_imagenet32': (2000, 500),
}


def shared_data_dir() -> Path:
  env = os.environ.get('RANKDEFICIT_SHARED_DATA')
  return Path(env) if env else Path(__file__).parents[1].parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data() -> Path:
  """The ../shared/data folder (skips when absent)."""
  path = shared_data_dir()
  if not (path / 'cifar10_jpeg.zip').exists():
    pytest.skip(f'real data folder {path} (../shared/data or $RANKDEFICIT_SHARED_DATA) is '
                f'absent: tests on real images are skipped.')
  return path


@pytest.fixture(scope='session')
def local_data_dir(shared_data, tmp_path_factory) -> str:
  """tfds data_dir with small `cifar10_jpeg`, `mnist` and `tiny_imagenet32` subsets."""
  from rankdeficit.data import local_import  # pylint: disable=import-outside-toplevel
  data_dir = tmp_path_factory.mktemp('tfds_data')
  for name, (n_train, n_test) in LOCAL_DATA_LIMITS.items():
    local_import.IMPORTERS[name](str(data_dir), source=str(shared_data),
                                 limit_train=n_train, limit_test=n_test)
  return str(data_dir)
