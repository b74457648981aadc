"""uint8 train batches (augment imagenet/vit) through the pipeline, the jitted train step and
a resumed run: the step's device normalisation is what the host's float batches were."""

import functools
import shutil

import jax
import numpy as np
import pytest

from configs import base
from rankdeficit import models
from rankdeficit.data import augment
from rankdeficit.data import input_pipeline
from rankdeficit.run import checkpointing
from rankdeficit.run import run_dir
from rankdeficit.training import losses
from rankdeficit.training import optim
from rankdeficit.training import steps
from rankdeficit.training import train


def digits_config(augment_name='imagenet', **overrides):
  """A tiny MLP on scikit-learn's digits (in memory: no data_dir), upscaled to 16x16."""
  c = base.get_config()
  c.dataset, c.ood_dataset, c.augment, c.image_size = 'digits', '', augment_name, 16
  c.model.name, c.model.width, c.model.depth, c.model.init = 'mlp', 32, 2, 'kaiming'
  c.batch_size = c.eval_batch_size = c.metrics_batch_size = 32
  c.learning_rate, c.momentum, c.weight_decay, c.lr_milestones = 0.05, 0.9, 1e-4, ()
  c.num_train_steps, c.log_every_steps, c.eval_every_steps = 4, 2, 1000
  c.checkpoint_every_steps, c.metrics_every_steps = 1000, 0
  c.update_from_flattened_dict(overrides)
  return c


@pytest.mark.parametrize('augment_name', ['imagenet', 'vit', 'cifar'])
def test_train_batches_are_uint8_exactly_for_the_crop_augments(augment_name):
  config = digits_config(augment_name)
  batch = next(input_pipeline.create_train_iterator(config, seed=0))
  preprocess = input_pipeline.device_preprocess(config)
  if augment_name == 'cifar':
    assert batch['image'].dtype == np.float32 and preprocess is None
    return
  assert batch['image'].dtype == np.uint8 and batch['image'].shape == (32, 16, 16, 3)
  assert ('color_factors' in batch) == (augment_name == 'imagenet')
  want_mean = (0.5,) * 3 if augment_name == 'vit' else (0.3048,) * 3
  assert preprocess.mean == want_mean  # the statistics the host used before
  eval_batch = next(
    iter(input_pipeline.create_eval_iterator(config, 'digits', 'test', batch_size=32))
  )
  assert eval_batch['image'].dtype == np.float32  # eval stays float, normalised on the host


def _one_step(config, batch, preprocess):
  model = models.create_model(config.model, 10)
  tx = optim.create_optimizer(config, 8)
  state = steps.create_train_state(
    jax.random.PRNGKey(0), model=model, tx=tx, image_shape=(16, 16, 3)
  )
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      loss_fn=losses.cross_entropy,
      temperature_fn=lambda _: 1.0,
      preprocess=preprocess,
    )
  )
  state, metrics = step(state, batch)
  return jax.device_get(state.params), float(metrics['loss'])


def test_train_step_on_uint8_equals_the_host_float_batch():
  config = digits_config('imagenet')
  records = [input_pipeline.datasets.open_source('digits', 'train', None)[i] for i in range(32)]
  prep = input_pipeline._preprocess(config, 'digits')  # pylint: disable=protected-access
  host = augment.TrainTransform('imagenet', prep)
  ship = augment.TrainTransform('imagenet', prep, device_normalize=True)
  floats = [host.random_map(r, np.random.default_rng(i)) for i, r in enumerate(records)]
  uint8s = [ship.random_map(r, np.random.default_rng(i)) for i, r in enumerate(records)]
  stack = lambda outs: {k: np.stack([o[k] for o in outs]) for k in outs[0]}  # noqa: E731
  want, want_loss = _one_step(config, stack(floats), None)
  got, got_loss = _one_step(config, stack(uint8s), input_pipeline.device_preprocess(config))
  assert abs(got_loss - want_loss) < 1e-5 * abs(want_loss)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with pytest.raises(TypeError, match='preprocess'):
    _one_step(config, stack(uint8s), None)


def test_resumed_uint8_run_is_bitwise_identical(tmp_path, caplog):
  devices, config = jax.devices()[:1], digits_config(checkpoint_every_steps=2)
  straight, _ = train.train_and_evaluate(config, str(tmp_path / 'a'), devices=devices)
  # A run killed after saving step 2: the same workdir without its last checkpoint.
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  shutil.rmtree(run_dir.RunDir(tmp_path / 'b').checkpoint(4))
  assert checkpointing.Checkpointer(str(tmp_path / 'b')).latest_step == 2
  caplog.set_level('INFO', logger='absl')  # whatever another test left absl's level at
  resumed, _ = train.train_and_evaluate(config, str(tmp_path / 'b'), devices=devices)
  assert 'Resumed from checkpoint at step 2.' in caplog.text  # rather than restarting
  assert checkpointing.Checkpointer(str(tmp_path / 'b')).latest_step == 4
  for a, b in zip(
    jax.tree.leaves(jax.device_get(resumed.params)),
    jax.tree.leaves(jax.device_get(straight.params)),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_device_resize_canvas_is_off_unless_set_for_a_crop_augment():
  assert input_pipeline.device_resize_canvas(digits_config('imagenet')) == 0
  assert input_pipeline.device_resize_canvas(digits_config('vit', device_resize_canvas=24)) == 24
  assert (
    input_pipeline.device_resize_canvas(digits_config('cifar', device_resize_canvas=24)) == 0
  )  # only crop augments ship crops


def test_train_step_on_crop_windows_equals_the_host_resized_batch():
  windows_config = digits_config('imagenet', device_resize_canvas=24)
  windows = next(input_pipeline.create_train_iterator(windows_config, seed=0))
  crops = next(input_pipeline.create_train_iterator(digits_config('imagenet'), seed=0))
  assert windows['image'].shape == (32, 24, 24, 3) and windows['image'].dtype == np.uint8
  assert windows['resize_box'].shape == (32, 4) and windows['flip'].dtype == bool
  np.testing.assert_array_equal(windows['color_factors'], crops['color_factors'])
  preprocess = input_pipeline.device_preprocess(windows_config)
  got, got_loss = _one_step(windows_config, windows, preprocess)
  want, want_loss = _one_step(windows_config, crops, preprocess)
  # The same crops, flips and jitter; the host rounds its resize to uint8, the device not.
  # (Measured: loss 3e-5 apart, parameters 8e-4; with the flips inverted 5e-2 and 1e-2.)
  assert abs(got_loss - want_loss) < 3e-4 * abs(want_loss)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=0, atol=3e-3)


def test_crop_windows_train_sharded_over_every_device(tmp_path):
  """The window batch's extra leaves ('resize_box', 'resize_valid', bool 'flip') shard over
  the data axis like the images do."""
  config = digits_config('imagenet', device_resize_canvas=24)
  devices = jax.devices()[:8]
  _, results = train.train_and_evaluate(config, str(tmp_path), devices=devices)
  assert np.isfinite(results['train/loss']) and results['eval/accuracy'] > 0
