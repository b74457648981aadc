"""config.input_on_device: the train loop on a dataset held on the device (real images).

The MLP trains through the loop: dispatches of several steps (on 8 devices) give the steps
of one-step dispatches, a run stopped by SIGTERM at a dispatch boundary and resumed equals
the run trained straight, divergence keeps the last good checkpoint; ResNet-20 takes steps
on device batches; bad configs are refused before anything runs.
"""

import functools
import signal

import jax
import numpy as np
import pytest
from test_train import tiny_config

from rankdeficit import models
from rankdeficit.data import device_data
from rankdeficit.plan import run_plan
from rankdeficit.plan import validation
from rankdeficit.run import checkpointing
from rankdeficit.run import config_diff
from rankdeficit.run import preemption
from rankdeficit.training import device_loop
from rankdeficit.training import loop_io
from rankdeficit.training import losses
from rankdeficit.training import optim
from rankdeficit.training import steps
from rankdeficit.training import train


def _config(data_dir, **overrides):
  """tiny_config (MLP, 512 CIFAR-10 images, batches of 64) with the input on the device."""
  overrides = {'input_on_device': True, 'augment': 'cifar', 'num_train_steps': 8, **overrides}
  return tiny_config(data_dir, **overrides)


def _train(config, workdir):
  return train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])


def _leaves(workdir):
  _, _, variables, step = run_plan.load_run(str(workdir))
  return step, [np.asarray(x) for x in jax.tree.leaves(variables)]


def _stopped_at_4_and_resumed(config, workdir, monkeypatch):
  """Trains `config` in `workdir`, stopped by SIGTERM after step 4, then resumed."""
  hooks = loop_io.step_hooks
  signal_at_4 = lambda step: step == 4 and signal.raise_signal(signal.SIGTERM)
  monkeypatch.setattr(loop_io, 'step_hooks', lambda *a, **k: hooks(*a, **k) + [signal_at_4])
  with pytest.raises(preemption.Stopped) as stopped:
    _train(config, workdir)
  assert stopped.value.step == 4  # at a dispatch boundary, saved
  assert checkpointing.Checkpointer(str(workdir)).latest_step == 4
  monkeypatch.setattr(loop_io, 'step_hooks', hooks)
  return _train(config, workdir)  # the same command resumes at step 4


def test_mlp_dispatches_resume_and_divergence(local_data_dir, tmp_path, monkeypatch):
  one, one_results = _train(_config(local_data_dir), tmp_path / 'one')
  # Dispatches of 3 and 1 (clipped at the log steps 4 and 8), means still over 4 steps; on
  # 8 devices where there are (the batches sharded over them), else on one.
  three, three_results = train.train_and_evaluate(
    _config(local_data_dir, steps_per_dispatch=3),
    str(tmp_path / 'three'),
    devices=jax.devices()[: 8 if jax.device_count() >= 8 else 1],
  )
  assert int(three.step) == 8 and three_results['train/steps_averaged'] == 4
  assert three_results['eval/num_examples'] == 500 and np.isfinite(three_results['train/loss'])
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(three.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(one_results['train/loss'], three_results['train/loss'], rtol=1e-5)
  # 4 steps, SIGTERM, resume, 4 steps (dispatches of 4) = 8 steps straight. The data stream
  # is a function of (seed, step): only summation order may differ from one-step dispatches.
  config = _config(local_data_dir, steps_per_dispatch=4)
  _stopped_at_4_and_resumed(config, tmp_path / 'stopped', monkeypatch)
  (step_a, resumed), (step_b, straight) = _leaves(tmp_path / 'stopped'), _leaves(tmp_path / 'one')
  assert step_a == step_b == 8
  for a, b in zip(resumed, straight):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  # Diverging at dispatch granularity still keeps the last good checkpoint: continue the
  # first run under a huge learning rate (check_resumable would refuse the changed config).
  exploding = _config(
    local_data_dir,
    num_train_steps=16,
    checkpoint_every_steps=2,
    log_every_steps=2,
    steps_per_dispatch=2,
    learning_rate=1e30,
  )
  monkeypatch.setattr(config_diff, 'check_resumable', lambda config, workdir: None)
  with pytest.raises(FloatingPointError, match='last good checkpoint'):
    _train(exploding, tmp_path / 'one')
  step, leaves = _leaves(tmp_path / 'one')
  assert step >= 8 and all(np.all(np.isfinite(x)) for x in leaves)


def test_resnet20_trains_on_device_batches(local_data_dir):
  """ResNet-20 (convs, BatchNorm) on the device dataset: the stream advances with the
  state's step and the BatchNorm statistics train on its batches. (One step per call, the
  loop's default, which a CPU needs: see device_loop.)"""
  config = _config(local_data_dir, **{'model.name': 'resnet20'}, learning_rate=0.01)
  model = models.create_model(config.model, 10)
  tx = optim.create_optimizer(config, 8)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, tx, (32, 32, 3))
  initial = jax.device_get(state.batch_stats)
  run = jax.jit(
    functools.partial(
      steps.train_steps,
      num_steps=1,
      batch_size=config.batch_size,
      augment='cifar',
      model=model,
      tx=tx,
      loss_fn=losses.cross_entropy,
      temperature_fn=lambda _: 1.0,
    )
  )
  dataset, key = device_data.load_device_dataset(config), device_data.data_key(config.seed)
  state, first = run(state, dataset, key)
  state, second = run(state, dataset, key)
  assert int(state.step) == 2 and first['loss'].shape == (1,)
  assert np.isfinite(first['loss'][0]) and first['loss'][0] != second['loss'][0]
  for before, after in zip(jax.tree.leaves(initial), jax.tree.leaves(state.batch_stats)):
    assert not np.array_equal(np.asarray(before), np.asarray(after))


def test_dispatches_stop_at_every_step_with_host_work():
  size = lambda step, per: device_loop.dispatch_size(
    step, periods=(4, 6), stops=(10, 11), steps_per_dispatch=per
  )
  sizes, step = [], 0
  while step < 11:
    sizes.append(size(step, 5))
    step += sizes[-1]
  assert sizes == [4, 2, 2, 2, 1]  # to 4, 6, 8 (periods), 10, 11 (stops)
  assert [size(s, 5) for s in (12, 13, 17)] == [4, 2, 1]  # 5 would cross 16, 16, 18
  assert size(0, 1) == 1 and size(24, 3) == 3  # the full dispatch when nothing is in reach


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'steps_per_dispatch': 0}, 'steps_per_dispatch=0 is invalid'),
    ({'input_on_device': False, 'steps_per_dispatch': 4}, 'needs config.input_on_device'),
    ({'augment': 'imagenet'}, "not 'imagenet'"),
    ({'augment': 'vit'}, "not 'vit'"),
    ({'dataset': 'imagenet2012'}, 'needs a dataset held in memory'),
  ],
)
def test_bad_input_on_device_configs_are_refused(overrides, message):
  with pytest.raises(ValueError, match=message):
    validation.validate_fields(_config(None, **overrides), num_devices=1)


def test_digits_and_mnist_are_accepted():
  for dataset in ('digits', 'mnist', 'tiny_imagenet32'):
    validation.validate_fields(_config(None, dataset=dataset), num_devices=1)
