"""In-memory small datasets: same records, same batches, same checkpointable state."""

import numpy as np
import pytest

from configs import base
from rankdeficit.data import datasets
from rankdeficit.data import input_pipeline
from rankdeficit.data import memory


def _config(data_dir, in_memory, dataset='cifar10_jpeg'):
  c = base.get_config()
  c.dataset, c.data_dir, c.augment = dataset, data_dir, 'cifar'
  c.batch_size, c.in_memory = 50, in_memory
  return c


@pytest.mark.parametrize('name', ['cifar10_jpeg', 'mnist', 'tiny_imagenet32'])
def test_in_memory_records_equal_stored_records(local_data_dir, name):
  stored = datasets.open_source(name, 'test', local_data_dir)
  held = datasets.open_source(name, 'test', local_data_dir, in_memory=True)
  assert isinstance(held, memory.InMemorySource)
  assert len(held) == len(stored)
  for i in (0, 7, len(stored) - 1):
    a, b = stored[i], held[i]
    np.testing.assert_array_equal(np.asarray(a['image']).reshape(b['image'].shape), b['image'])
    assert int(a['label']) == int(b['label'])
  # Decoded once per process: a second open returns the very same arrays.
  again = datasets.open_source(name, 'test', local_data_dir, in_memory=True)
  assert again.images is held.images


def test_imagenet_and_digits_are_not_held():
  assert not datasets.holds_in_memory('imagenet2012')
  assert not datasets.holds_in_memory('digits')  # already in memory
  assert datasets.holds_in_memory('cifar100')


def test_train_batches_identical_and_resumable(local_data_dir):
  on = input_pipeline.create_train_iterator(_config(local_data_dir, True), seed=3)
  off = input_pipeline.create_train_iterator(_config(local_data_dir, False), seed=3)
  for _ in range(2):
    a, b = next(on), next(off)
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  state = on.get_state()
  expected = next(on)
  resumed = input_pipeline.create_train_iterator(_config(local_data_dir, True), seed=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)['image'], expected['image'])


def test_eval_iterator_in_memory_matches(local_data_dir):
  def collect(in_memory):
    it = input_pipeline.create_eval_iterator(
      _config(local_data_dir, in_memory, 'mnist'), 'mnist', 'test', batch_size=200
    )
    return [b['image'] for b in it]

  for a, b in zip(collect(True), collect(False), strict=True):
    np.testing.assert_array_equal(a, b)


def test_rejects_bad_arrays():
  with pytest.raises(ValueError, match='uint8'):
    memory.InMemorySource(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2), 'x')
  with pytest.raises(ValueError, match='labels'):
    memory.InMemorySource(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3), 'x')
