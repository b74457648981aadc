"""Parameter counts of every model against the standard architectures (via jax.eval_shape)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from rankdeficit import models


def model_config(name, **overrides):
  c = base.get_config().model
  c.name = name
  for k, v in overrides.items():
    c[k] = v
  return c


def abstract_variables(name, num_classes, size, **overrides):
  model = models.create_model(model_config(name, **overrides), num_classes)
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def num_params(name, num_classes, size, **overrides):
  params = abstract_variables(name, num_classes, size, **overrides)['params']
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize(
  'name,stem,num_classes,size,expected',
  [
    ('resnet18', 'cifar', 10, 32, 11_173_962),  # kuangliu/pytorch-cifar ResNet18
    ('resnet18', 'imagenet', 1000, 224, 11_689_512),  # torchvision resnet18
    ('resnet34', 'imagenet', 1000, 224, 21_797_672),  # torchvision resnet34
    ('resnet50', 'imagenet', 1000, 224, 25_557_032),  # torchvision resnet50
    ('resnet20', 'cifar', 10, 32, 272_474),  # He et al. CIFAR ResNet-20, 1x1 projections
  ],
)
def test_resnet_param_counts(name, stem, num_classes, size, expected):
  assert num_params(name, num_classes, size, stem=stem) == expected


def test_resnet20_count_by_formula():
  # torch_ref.py's ResNet([3, 3, 3], [16, 32, 64]): bias-free convs, BN (2 params/channel),
  # 1x1 conv + BN shortcut on the first block of stages 2 and 3, fc with bias.
  conv = lambda k, cin, cout: k * k * cin * cout + 2 * cout
  total = conv(3, 3, 16)
  cin = 16
  for stage, w in enumerate((16, 32, 64)):
    for b in range(3):
      total += conv(3, cin, w) + conv(3, w, w)
      if cin != w:
        total += conv(1, cin, w)
      cin = w
  total += 64 * 10 + 10
  assert total == 272_474 == num_params('resnet20', 10, 32)


@pytest.mark.parametrize('name,bn', [('vgg19', False), ('vgg19_bn', True)])
def test_vgg19_count_by_formula(name, bn):
  # torch_ref.py's vgg19: 3x3 convs with bias (+ BatchNorm2d for _bn), 512-512-512-C head.
  cfg = [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8
  total, cin = 0, 3
  for cout in cfg:
    total += 9 * cin * cout + cout + (2 * cout if bn else 0)
    cin = cout
  total += (512 * 512 + 512) * 2 + 512 * 100 + 100
  assert num_params(name, 100, 32) == total
  assert total == (20_565_834 if bn else 20_554_826) + 90 * 513  # measured at 10 classes


def test_vit_b16_param_count():
  # ViT-B/16 at 224, class token, learned pos-emb, 1000-way head (timm vit_base_patch16_224).
  assert num_params('vit_b16', 1000, 224) == 86_567_656


@pytest.mark.parametrize('width,depth,layer_norm', [(2048, 8, False), (512, 4, True)])
def test_mlp_count_by_formula(width, depth, layer_norm):
  total = 32 * 32 * 3 * width + width + (depth - 1) * (width * width + width)
  total += depth * 2 * width if layer_norm else 0
  total += width * 10 + 10
  assert num_params('mlp', 10, 32, width=width, depth=depth, layer_norm=layer_norm) == total
  if (width, depth, layer_norm) == (2048, 8, False):
    assert total == 35_688_458


@pytest.mark.parametrize(
  'reading,depth,expected', [('layers8', 7, 31_492_106), ('hidden8', 8, 35_688_458)]
)
def test_paper_mlp_depth_readings(reading, depth, expected):
  # configs/mlp_c10.py: "8 layers" = 7 hidden ReLU layers + classifier (default), or 8 + 1.
  from configs import mlp_c10  # pylint: disable=import-outside-toplevel

  c = mlp_c10.get_config(reading)
  assert c.model.depth == depth
  assert num_params('mlp', 10, 32, width=c.model.width, depth=c.model.depth) == expected
  x = jnp.zeros((2, 32, 32, 3))
  model = models.create_model(c.model, 10)
  _, reps = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))[0]
  assert len(reps) == depth  # + the final layer = depth + 1 probed layers


def test_unknown_mlp_reading_is_rejected():
  from configs import mlp_c10  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match='hidden8'):
    mlp_c10.get_config('nine')


def test_batch_stats_only_in_bn_models():
  assert 'batch_stats' in abstract_variables('resnet20', 10, 32)
  assert 'batch_stats' in abstract_variables('vgg19_bn', 10, 32)
  assert 'batch_stats' not in abstract_variables('vgg19', 10, 32)
  assert 'batch_stats' not in abstract_variables('mlp', 10, 32)


def test_params_are_float32_in_bfloat16_models():
  for name in ('resnet20', 'vit_tiny', 'mlp'):
    variables = abstract_variables(name, 10, 32, dtype='bfloat16')
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype('float32')}


def test_unknown_options_raise():
  with pytest.raises(ValueError, match='resnet18'):  # the message lists the valid names
    models.create_model(model_config('resnet19'), 10)
  with pytest.raises(ValueError, match='kaiming'):
    models.create_model(model_config('mlp', init='he'), 10)
  with pytest.raises(ValueError, match='cifar'):
    models.create_model(model_config('resnet18', stem='tiny'), 10)
  with pytest.raises(ValueError, match='bfloat16'):
    models.create_model(model_config('mlp', dtype='float16'), 10)
  with pytest.raises(ValueError, match='layer_norm'):
    models.create_model(model_config('resnet18', layer_norm=True), 10)


def test_model_names():
  assert set(models.MODEL_NAMES) >= {
    'mlp',
    'vgg19',
    'vgg19_bn',
    'resnet18',
    'resnet20',
    'resnet34',
    'resnet50',
    'vit_b16',
    'vit_ti16',
    'vit_tiny',
  }
