"""cpu_conv: every formulation computes lax.conv's values and gradients; models train alike."""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from rankdeficit import models
from rankdeficit.models import cpu_conv
from rankdeficit.models import resnet
from rankdeficit.models import vgg
from rankdeficit.training import losses
from rankdeficit.training import optim
from rankdeficit.training import steps

# (batch, H, W, cin, cout, kernel, stride): 3x3 same / strided, 1x1 strided, 4x4 and 2x2 maps.
SHAPES = [
  (2, 8, 8, 3, 5, 3, 1),
  (2, 9, 7, 4, 6, 3, 2),
  (2, 8, 8, 4, 6, 1, 2),
  (3, 4, 4, 6, 5, 3, 1),
  (3, 2, 2, 6, 5, 3, 1),
  (2, 6, 6, 4, 4, 1, 1),
]


def _reference(x, w, stride, pad):
  return lax.conv_general_dilated(
    x,
    w,
    (stride, stride),
    pad,
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    precision=lax.Precision.HIGHEST,
  )


def _value_and_grads(conv, x, w, ct):
  y, vjp = jax.vjp(conv, x, w)
  return (y, *vjp(ct))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('impl', ['im2col', 'cpu', 'mixed'])
def test_values_and_gradients_match_lax_conv_in_float64(shape, impl):
  n, h, wd, cin, cout, k, s = shape
  rng = np.random.default_rng(0)
  pad = ((k // 2, k // 2),) * 2
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(n, h, wd, cin)))
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)))
    ref = _value_and_grads(
      functools.partial(_reference, stride=s, pad=pad),
      x,
      w,
      jnp.asarray(rng.normal(size=_reference(x, w, s, pad).shape)),
    )
    ct = jnp.asarray(rng.normal(size=ref[0].shape))
    ref = _value_and_grads(functools.partial(_reference, stride=s, pad=pad), x, w, ct)
    if impl == 'mixed':  # each pass by a different formulation, through the custom_vjp
      conv = lambda x, w: cpu_conv.per_pass_conv(x, w, (s, s), pad, ('xla', 'im2col', 'im2col'))
    else:
      conv = lambda x, w: cpu_conv.conv_general_dilated(impl)(
        x, w, (s, s), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
      )
    got = _value_and_grads(conv, x, w, ct)
    assert got[0].dtype == jnp.float64
  for name, a, b in zip(('y', 'dx', 'dw'), got, ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10, err_msg=name)


def test_non_plain_convs_fall_through_to_lax():
  x = jnp.ones((1, 5, 5, 4))
  w = jnp.ones((3, 3, 2, 4))  # grouped: feature_group_count=2
  got = cpu_conv.conv_general_dilated('im2col')(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2
  )
  want = lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2
  )
  np.testing.assert_array_equal(got, want)


def test_resolve_and_bad_values():
  assert cpu_conv.resolve('auto') == ('cpu' if jax.default_backend() == 'cpu' else 'xla')
  assert cpu_conv.resolve('xla') == 'xla'
  with pytest.raises(ValueError, match='conv_impl'):
    cpu_conv.resolve('winograd')
  c = base.get_config().model
  c.name, c.conv_impl = 'resnet20', 'fast'
  with pytest.raises(ValueError, match='conv_impl'):
    models.create_model(c, 10)


def test_pick_rules():
  shape = cpu_conv.ConvShape
  assert {cpu_conv.pick(shape(2, 2, 512, 512, 3, 1), p) for p in cpu_conv.PASSES} == {'im2col'}
  assert cpu_conv.pick(shape(32, 32, 16, 16, 3, 1), 'dw') == 'xla'
  assert cpu_conv.pick(shape(32, 32, 16, 32, 1, 2), 'dw') == 'im2col'


def _losses_after_3_steps(model, image_size=16):
  config = base.get_config()
  config.lr_milestones = ()
  tx = optim.create_optimizer(config, steps_per_epoch=100)  # SGD 0.1, momentum, wd
  state = jax.jit(
    functools.partial(
      steps.create_train_state, model=model, tx=tx, image_shape=(image_size,) * 2 + (3,)
    )
  )(jax.random.PRNGKey(0))
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      loss_fn=losses.cross_entropy,
      temperature_fn=lambda _: 1.0,
    )
  )
  rng = np.random.default_rng(1)
  batch = {
    'image': jnp.asarray(rng.normal(size=(8, image_size, image_size, 3)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
  }
  out = []
  for _ in range(3):
    state, metrics = step(state, batch)
    out.append(float(metrics['loss']))
  return np.asarray(out)


@pytest.mark.parametrize('family', ['resnet20', 'vgg19_bn'])
def test_three_train_steps_match_xla_conv_up_to_summation_order(family):
  def build(impl):
    conv = cpu_conv.conv_general_dilated(impl)
    if family == 'resnet20':
      return resnet.ResNet(
        num_classes=10, stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), conv_general_dilated=conv
      )
    cfg = (4, 'M', 8, 'M', 8, 8, 'M', 8, 'M')  # maps 16, 8, 4, 2 (1x1, 3x3 rules all used)
    return vgg.VGG(num_classes=10, cfg=cfg, batch_norm=True, fc_width=8, conv_general_dilated=conv)

  want = _losses_after_3_steps(build('xla'))
  got = _losses_after_3_steps(build('cpu'))  # ('im2col' everywhere: the float64 tests above)
  # float32 summation order only: ~1e-7 relative per op; 1e-5 bounds 3 SGD steps.
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert not np.allclose(want[0], want[2], rtol=1e-3)  # the steps did change the model
