"""Initialisation schemes (paper App. E): empirical statistics in float64, and their effect
on the initial logits norm of a deep ReLU MLP."""

import math

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from rankdeficit import models
from rankdeficit.models.initializers import INIT_SCHEMES
from rankdeficit.models.initializers import Init


def layer_params(layer, in_shape, seed=0):
  x = jnp.zeros(in_shape, jnp.float32)
  # 'rbg' keys: threefry sampling compiles several times slower on a CPU; same distributions.
  params = layer.init(jax.random.key(seed, impl='rbg'), x)['params']
  return (
    np.asarray(params['kernel'], np.float64),
    np.asarray(params['bias'], np.float64) if 'bias' in params else None,
  )


def test_pytorch_dense_bounds():
  fan_in = 300
  kernel, bias = layer_params(nn.Dense(400, **Init('pytorch').dense(fan_in)), (1, fan_in))
  bound = 1 / math.sqrt(fan_in)
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
  assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.9 * bound
  # U(-b, b) has std b / sqrt(3); 120k samples pin it to well under 1%.
  np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3), rtol=0.01)
  assert abs(kernel.mean()) < 0.01 * bound


def test_pytorch_conv_uses_receptive_field_fan_in():
  cin, k = 16, 3
  fan_in = k * k * cin
  kernel, bias = layer_params(nn.Conv(64, (k, k), **Init('pytorch').conv(fan_in)), (1, 8, 8, cin))
  bound = 1 / math.sqrt(fan_in)
  assert kernel.shape == (k, k, cin, 64)
  assert bound * 0.98 < np.abs(kernel).max() <= bound
  assert np.abs(bias).max() <= bound
  np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3), rtol=0.03)


@pytest.mark.parametrize(
  'layer,in_shape,fan_in',
  [
    (nn.Dense(512, **Init('kaiming').dense(256)), (1, 256), 256),
    (nn.Conv(128, (3, 3), **Init('kaiming').conv(9 * 32)), (1, 4, 4, 32), 9 * 32),
  ],
)
def test_kaiming_std_and_zero_bias(layer, in_shape, fan_in):
  kernel, bias = layer_params(layer, in_shape)
  np.testing.assert_allclose(kernel.std(), math.sqrt(2 / fan_in), rtol=0.02)
  assert np.all(bias == 0)
  # Untruncated normal (as torch's kaiming_normal_): some samples beyond 2 std.
  assert np.abs(kernel).max() > 3 * math.sqrt(2 / fan_in)


def test_torchvision_conv_fan_out():
  cin, cout = 16, 64
  conv = nn.Conv(cout, (3, 3), use_bias=False, **Init('torchvision').conv(9 * cin))
  kernel, _ = layer_params(conv, (1, 4, 4, cin))
  np.testing.assert_allclose(kernel.std(), math.sqrt(2 / (9 * cout)), rtol=0.03)


def test_normal_sigma():
  kernel, bias = layer_params(nn.Dense(300, **Init('normal', sigma=0.05).dense(400)), (1, 400))
  np.testing.assert_allclose(kernel.std(), 0.05, rtol=0.02)
  assert np.all(bias == 0)


def test_unknown_scheme():
  with pytest.raises(ValueError, match='pytorch'):
    Init('glorot')
  assert set(INIT_SCHEMES) >= {'kaiming', 'pytorch', 'normal'}


def initial_logits_norm(init, layer_norm=False):
  c = base.get_config().model
  c.name, c.width, c.depth, c.init, c.layer_norm = 'mlp', 1024, 8, init, layer_norm
  model = models.create_model(c, 10)
  x = np.random.default_rng(1).standard_normal((64, 32, 32, 3)).astype(np.float32)  # unit scale
  variables = jax.jit(model.init)(jax.random.key(0, impl='rbg'), x[:1])
  logits, reps = model.apply(variables, x)
  return float(jnp.linalg.norm(logits)), reps


def test_pytorch_init_mlp_starts_with_tiny_logits_norm():
  # SPEC 1 / paper App. E: each PyTorch-default layer scales the ReLU signal's second moment
  # by ~1/6 (plus the bias variance 1/(3 fan_in), which sets a floor), so an 8-layer MLP
  # starts with a logits norm far below Kaiming init's (measured ~1/70 at width 1024).
  pytorch_norm, pytorch_reps = initial_logits_norm('pytorch')
  kaiming_norm, kaiming_reps = initial_logits_norm('kaiming')
  assert pytorch_norm < kaiming_norm / 20, (pytorch_norm, kaiming_norm)
  # The shrinkage is layer by layer, while Kaiming init preserves the scale.
  rms = [float(jnp.sqrt(jnp.mean(r**2))) for r in pytorch_reps.values()]
  assert all(b <= 1.05 * a for a, b in zip(rms, rms[1:])) and rms[-1] < rms[0] / 10, rms
  kaiming_rms = [float(jnp.sqrt(jnp.mean(r**2))) for r in kaiming_reps.values()]
  assert 0.25 < kaiming_rms[-1] / kaiming_rms[0] < 4, kaiming_rms
  # A normal init with small sigma is smaller still (Figure 17: smaller sigma, smaller norm).
  assert initial_logits_norm('normal')[0] < pytorch_norm
