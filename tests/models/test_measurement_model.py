"""Half precision: bf16 activations, f32 parameters and optimizer state; the collapse monitor
(per-layer ranks and SR) and feature extraction measure a bf16-trained model in float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from rankdeficit import models
from rankdeficit.analysis import extraction
from rankdeficit.metrics import spectral
from rankdeficit.training import losses
from rankdeficit.training import monitor
from rankdeficit.training import optim
from rankdeficit.training import steps


def _bf16_trained_mlp():
  config = base.get_config()
  base.mlp_recipe(config)
  config.model.width, config.model.depth, config.model.dtype = 16, 2, 'bfloat16'
  model = models.create_model(config.model, num_classes=10)
  tx = optim.create_optimizer(config, steps_per_epoch=10)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, tx, (4, 4, 3))
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      loss_fn=losses.cross_entropy,
      temperature_fn=lambda _: 1.0,
    )
  )
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 1, (32, 4, 4, 3)), jnp.float32)  # >= 0
  labels = jnp.asarray(rng.integers(0, 10, 32), jnp.int32)
  for _ in range(2):
    state, _ = step(state, {'image': images, 'label': labels})
  return model, state, images, labels


def test_half_precision_keeps_params_and_optimizer_state_in_float32():
  model, state, images, _ = _bf16_trained_mlp()
  for leaf in jax.tree.leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  _, reps = model.apply({'params': state.params}, images)
  assert reps['dense_0'].dtype == jnp.bfloat16  # the training forward is half precision
  _, reps = models.measurement_model(model).apply({'params': state.params}, images)
  assert all(r.dtype == jnp.float32 for r in reps.values())


def _monitor_metrics(model, params, images, labels):
  fn = monitor.make_collapse_metrics_fn(
    model, lambda logits, y, t: jnp.mean(losses.cross_entropy(logits, y, t))
  )
  return jax.device_get(fn({'params': params}, images, labels, 1.0, jax.random.PRNGKey(0)))


def test_monitor_ranks_and_sr_come_from_float32_features():
  model, state, images, labels = _bf16_trained_mlp()
  # A positive rank-2 first layer on positive inputs: ReLU is the identity, so the exact
  # (float64) rank of dense_0's features is 2; bf16 rounding would make it look full rank.
  rng = np.random.default_rng(1)
  kernel = rng.uniform(0.5, 1, (48, 2)) @ rng.uniform(0.5, 1, (2, 16)) / 48
  params = jax.tree.map(lambda x: x, state.params)
  params['dense_0'] = {
    'kernel': jnp.asarray(kernel, jnp.float32),
    'bias': jnp.zeros(16, jnp.float32),
  }
  x64 = np.asarray(images, np.float64).reshape(32, -1)
  h = np.maximum(x64 @ kernel, 0)
  assert np.linalg.matrix_rank(h) == 2
  for name in ('dense_1', 'head'):
    h = h @ np.asarray(params[name]['kernel'], np.float64) + np.asarray(params[name]['bias'])
    h = np.maximum(h, 0) if name != 'head' else h

  got = _monitor_metrics(models.measurement_model(model), params, images, labels)
  assert int(got['rank/rep/dense_0']) == 2
  want_sr = spectral.softmax_rank(jnp.asarray(h, jnp.float32), 1.0)
  assert int(got['rank/post_softmax']) == int(want_sr)
  # The same model measured in its bf16 training precision would be wrong:
  assert int(_monitor_metrics(model, params, images, labels)['rank/rep/dense_0']) > 2

  # Feature extraction for the analysis (extraction.extract_features), same model:
  feats = extraction.extract_features(
    models.measurement_model(model),
    {'params': params},
    [{'image': np.asarray(images), 'label': np.asarray(labels)}],
  )
  np.testing.assert_allclose(feats.logits, h, rtol=1e-5, atol=1e-6)
  assert int(spectral.numerical_rank(jnp.asarray(feats.reps['dense_0']))) == 2
