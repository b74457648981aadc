"""Shared pytest fixtures.

`local_data_dir` (session scope): a temporary tfds data_dir holding small real subsets of
../shared/data imported ONCE per session through the offline import path
(`rankdeficit.data.local_import`, the same code as `python -m tools.import_data`):

  - `cifar10_jpeg`:    2,000 train / 500 test CIFAR-10 JPEG images (32x32x3, 10 classes)
  - `mnist`:           1,000 train / 500 test MNIST digits (28x28x1), tfds' own name/version
  - `tiny_imagenet32`: 2,000 train / 500 test Tiny-ImageNet-200 images (32x32x3, 200 classes)

Subsets are evenly spaced through each split (class-balanced where the source is
class-sorted). Under pytest-xdist the workers of one session share a single import (the
first worker writes it, the others wait on a file lock). Use it as
`config.data_dir = local_data_dir`. The shared data folder is
`../shared/data` relative to the repo root, or $RANKDEFICIT_SHARED_DATA; tests using the
fixture are skipped (with the reason) only when that folder is absent. `digits` needs no
data_dir at all.
"""

import fcntl
import os
from pathlib import Path
import shutil

import pytest

from rankdeficit.run import runtime

# The suite runs under the XLA CPU flags of the project's programs (set before JAX starts).
runtime.set_xla_cpu_flags()

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
    pytest.skip(
      f'real data folder {path} (../shared/data or $RANKDEFICIT_SHARED_DATA) is '
      f'absent: tests on real images are skipped.'
    )
  return path


@pytest.fixture(scope='session')
def local_data_dir(shared_data, tmp_path_factory) -> str:
  """tfds data_dir with small `cifar10_jpeg`, `mnist` and `tiny_imagenet32` subsets."""
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    data_dir = tmp_path_factory.mktemp('tfds_data')
    _import_subsets(data_dir, shared_data)
    return str(data_dir)
  # xdist: each worker's basetemp is a folder of one per-session parent; import there once.
  root = tmp_path_factory.getbasetemp().parent
  data_dir, done = root / 'tfds_data', root / 'tfds_data.done'
  with open(root / 'tfds_data.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      shutil.rmtree(data_dir, ignore_errors=True)  # a worker that failed half-way
      data_dir.mkdir()
      _import_subsets(data_dir, shared_data)
      done.touch()
  return str(data_dir)


def _import_subsets(data_dir: Path, source: Path) -> None:
  from rankdeficit.data import local_import  # pylint: disable=import-outside-toplevel

  for name, (n_train, n_test) in LOCAL_DATA_LIMITS.items():
    local_import.IMPORTERS[name](
      str(data_dir), source=str(source), limit_train=n_train, limit_test=n_test
    )
