"""Forward-pass contract: logits/reps shapes, reps names and order, dtypes, BatchNorm state."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from rankdeficit import models
from rankdeficit.models import resnet


def create(name, num_classes=10, **overrides):
  c = base.get_config().model
  c.name = name
  for k, v in overrides.items():
    c[k] = v
  return models.create_model(c, num_classes)


def abstract_forward(model, size, batch=2):
  """(logits, reps) shapes via jax.eval_shape: no real init even for the big models."""
  x = jnp.zeros((batch, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1], train=False))
  return jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)


EXPECTED_REPS = {
  # name: (overrides, input size, [(key, shape without batch)] in forward order)
  'mlp': (
    dict(width=64, depth=3),
    32,
    [('dense_0', (64,)), ('dense_1', (64,)), ('dense_2', (64,))],
  ),
  'vgg19': (
    {},
    32,
    [
      (f'conv_{i}', (s, s, c))
      for i, (s, c) in enumerate(
        [(32, 64)] * 2 + [(16, 128)] * 2 + [(8, 256)] * 4 + [(4, 512)] * 4 + [(2, 512)] * 4
      )
    ]
    + [('fc_0', (512,)), ('fc_1', (512,))],
  ),
  'resnet20': (
    dict(stem='cifar'),
    32,
    [('stem', (32, 32, 16))]
    + [(f'block{s + 1}_{b}', (32 >> s, 32 >> s, 16 << s)) for s in range(3) for b in range(3)]
    + [('pool', (64,))],
  ),
  'resnet18': (
    dict(stem='imagenet'),
    64,
    [('stem', (16, 16, 64))]
    + [(f'block{s + 1}_{b}', (16 >> s, 16 >> s, 64 << s)) for s in range(4) for b in range(2)]
    + [('pool', (512,))],
  ),
  'resnet50': (
    dict(stem='imagenet'),
    64,
    [('stem', (16, 16, 64))]
    + [
      (f'block{s + 1}_{b}', (16 >> s, 16 >> s, 256 << s))
      for s, n in enumerate((3, 4, 6, 3))
      for b in range(n)
    ]
    + [('pool', (2048,))],
  ),
  'vit_tiny': (
    {},
    32,
    [('embed', (65, 256))]
    + [(f'block_{i}', (65, 256)) for i in range(4)]
    + [('pre_logits', (256,))],
  ),
  'vit_b16': (
    {},
    224,
    [('embed', (197, 768))]
    + [(f'block_{i}', (197, 768)) for i in range(12)]
    + [('pre_logits', (768,))],
  ),
}


@pytest.mark.parametrize('name', sorted(EXPECTED_REPS))
def test_logits_and_reps(name):
  overrides, size, expected = EXPECTED_REPS[name]
  logits, reps = abstract_forward(create(name, 7, **overrides), size)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  # Forward order survives jax transformations because reps is an OrderedDict.
  assert isinstance(reps, collections.OrderedDict)
  assert [(k, v.shape[1:]) for k, v in reps.items()] == expected


def test_resnet34_cifar_stem_keeps_resolution():
  _, reps = abstract_forward(create('resnet34', stem='cifar'), 32)
  assert list(reps)[0] == 'stem' and reps['stem'].shape == (2, 32, 32, 64)
  assert len(reps) == 1 + 3 + 4 + 6 + 3 + 1 and reps['block4_2'].shape == (2, 4, 4, 512)


def images(shape, seed=1):
  # numpy inputs: each jax.random sampler costs a compile, slow on a busy 2-core CPU.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def real_init(model, x):
  # 'rbg' keys: compiling a threefry-based init takes ~6x longer on a CPU.
  return jax.jit(lambda x: model.init(jax.random.key(0, impl='rbg'), x, train=False))(x)


def small_resnet(**kwargs):
  # Two stages of one basic block (with a projection shortcut): cheap to compile on a CPU.
  return resnet.ResNet(num_classes=10, stage_sizes=(1, 1), stage_widths=(8, 16), **kwargs)


@functools.cache
def small_resnet_variables():
  return real_init(small_resnet(), jnp.zeros((1, 8, 8, 3)))


def test_batchnorm_train_updates_stats_and_eval_uses_them():
  model = small_resnet()
  x = 3.0 + 2.0 * images((8, 8, 8, 3))
  variables = small_resnet_variables()
  # torchvision's BatchNorm init: gamma 1, beta 0, running mean 0, running var 1.
  bn = variables['params']['block1_0']['bn2']
  assert np.all(bn['scale'] == 1) and np.all(bn['bias'] == 0)
  assert np.all(variables['batch_stats']['stem_bn']['var'] == 1)

  @jax.jit
  def train_apply(variables, x):
    return model.apply(variables, x, train=True, mutable=['batch_stats'])

  (logits, reps), updates = train_apply(variables, x)
  assert logits.shape == (8, 10) and list(reps) == ['stem', 'block1_0', 'block2_0', 'pool']
  assert 'proj_bn' in updates['batch_stats']['block2_0']
  old = variables['batch_stats']['stem_bn']
  new = updates['batch_stats']['stem_bn']
  # momentum 0.9 (PyTorch 0.1): running_mean = 0.9 * 0 + 0.1 * batch_mean.
  conv_out = jax.lax.conv_general_dilated(
    x,
    variables['params']['stem_conv']['kernel'],
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  np.testing.assert_allclose(new['mean'], 0.1 * conv_out.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
    new['var'], 0.9 * old['var'] + 0.1 * conv_out.var((0, 1, 2)), rtol=1e-3
  )
  # Eval mode reads the running statistics and changes nothing.
  eval_logits, _ = model.apply({**variables, **updates}, x, train=False)
  assert eval_logits.shape == (8, 10) and not np.allclose(eval_logits, logits)


@pytest.mark.parametrize('family', ['mlp', 'resnet'])
def test_bfloat16_compute_float32_logits(family):
  x = images((4, 8, 8, 3))
  if family == 'mlp':
    model32, model16 = (create('mlp', width=32, depth=2, dtype=d) for d in ('float32', 'bfloat16'))
    variables = real_init(model32, x)
  else:
    model32, model16 = small_resnet(), small_resnet(dtype=jnp.bfloat16)
    variables = small_resnet_variables()  # the same float32 params serve both
  logits32, _ = model32.apply(variables, x, train=False)
  logits16, reps16 = jax.jit(lambda v, x: model16.apply(v, x, train=False))(variables, x)
  assert logits16.dtype == jnp.float32
  assert list(reps16.values())[-1].dtype == jnp.bfloat16
  scale = float(jnp.abs(logits32).max())
  np.testing.assert_allclose(logits16, logits32, atol=0.1 * scale)


def test_mlp_layer_norm_keeps_scale_under_pytorch_init():
  # Figure 17 (bottom): LayerNorm in every hidden layer stops the depth-wise shrinkage.
  model = create('mlp', width=64, depth=6, init='pytorch', layer_norm=True)
  x = images((16, 8, 8, 3))
  variables = real_init(model, x)
  assert 'layer_norm_0' in variables['params']
  _, reps = model.apply(variables, x, train=False)
  rms = [float(jnp.sqrt(jnp.mean(r**2))) for r in reps.values()]
  assert 0.5 < rms[-1] / rms[0] < 2, rms
