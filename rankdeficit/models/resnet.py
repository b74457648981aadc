"""ResNets (He et al. 2016) with torchvision's layout (paper A.1).

ResNet-18/34 use basic blocks (two 3x3 convs), ResNet-50 bottleneck blocks (1x1, 3x3, 1x1 with
4x expansion, stride on the 3x3 as in torchvision "v1.5"). Every conv is bias-free and
followed by BatchNorm (gamma 1, beta 0). A block's shortcut is a 1x1 conv + BatchNorm
("option B") whenever the stride or the channel count changes, the identity otherwise.
ResNet-20 is the CIFAR ResNet of He et al. (three stages of 16/32/64 channels, three basic
blocks each) with the same projection shortcuts as /work/shared/bench/torch_ref.py.

Stems: 'cifar' = 3x3 conv stride 1 + BN + ReLU (no max-pool), used on CIFAR-sized inputs;
'imagenet' = 7x7 conv stride 2 + BN + ReLU + 3x3 max-pool stride 2.
Paddings are explicit (PyTorch's symmetric `padding=k//2`), not 'SAME', which pads strided
convs asymmetrically and would shift features relative to the PyTorch reference.

Representations (`reps`, forward order):
  'stem'                        [N, H, W, C] after the stem's ReLU (and max-pool if any)
  'block{s}_{b}'                [N, H, W, C] after the final ReLU of block b (from 0) of
                                stage s (from 1), e.g. ResNet-18: block1_0, block1_1, ...,
                                block4_1; ResNet-20: block1_0 ... block3_2
  'pool'                        [N, C] global-average-pooled features (penultimate feature)
"""

import collections
import functools
from typing import Any, Callable

from flax import linen as nn
from jax import lax
import jax.numpy as jnp

from rankdeficit.models.initializers import Init

# name -> (block kind, blocks per stage, channels of the stages' 3x3 convs)
RESNET_SPECS = {
  'resnet18': ('basic', (2, 2, 2, 2), (64, 128, 256, 512)),
  'resnet34': ('basic', (3, 4, 6, 3), (64, 128, 256, 512)),
  'resnet50': ('bottleneck', (3, 4, 6, 3), (64, 128, 256, 512)),
  'resnet20': ('basic', (3, 3, 3), (16, 32, 64)),
}


def _conv(
  init: Init,
  dtype,
  features: int,
  kernel: int,
  stride: int,
  name: str,
  cin: int,
  conv: Callable = lax.conv_general_dilated,
):
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    name=name,
    conv_general_dilated=conv,
    **init.conv(kernel * kernel * cin),
  )


class BasicBlock(nn.Module):
  """Two 3x3 convs; output channels = `features`."""

  features: int
  stride: int
  init_scheme: Init
  norm: Any  # partially applied nn.BatchNorm
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated  # formulation (models/cpu_conv.py)
  expansion = 1

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    y = _conv(self.init_scheme, self.dtype, self.features, 3, self.stride, 'conv1', cin, self.conv)(
      x
    )
    y = nn.relu(self.norm(name='bn1')(y))
    y = _conv(self.init_scheme, self.dtype, self.features, 3, 1, 'conv2', self.features, self.conv)(
      y
    )
    y = self.norm(name='bn2')(y)
    return nn.relu(y + _shortcut(self, x, self.features))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand; output channels = 4 * `features`."""

  features: int
  stride: int
  init_scheme: Init
  norm: Any
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated
  expansion = 4

  @nn.compact
  def __call__(self, x):
    cin, cout = x.shape[-1], self.features * self.expansion
    y = _conv(self.init_scheme, self.dtype, self.features, 1, 1, 'conv1', cin, self.conv)(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = _conv(
      self.init_scheme, self.dtype, self.features, 3, self.stride, 'conv2', self.features, self.conv
    )(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = _conv(self.init_scheme, self.dtype, cout, 1, 1, 'conv3', self.features, self.conv)(y)
    y = self.norm(name='bn3')(y)
    return nn.relu(y + _shortcut(self, x, cout))


def _shortcut(block, x, cout: int):
  """Identity, or 1x1 conv + BN when the block changes stride or channels (called in-block)."""
  if block.stride == 1 and x.shape[-1] == cout:
    return x
  p = _conv(
    block.init_scheme, block.dtype, cout, 1, block.stride, 'proj_conv', x.shape[-1], block.conv
  )(x)
  return block.norm(name='proj_bn')(p)


class ResNet(nn.Module):
  """ResNet classifier.

  Attributes:
    num_classes: size of the classifier output.
    stage_sizes: residual blocks per stage.
    stage_widths: channels of each stage's 3x3 convs (x4 at the output of bottlenecks).
    block: 'basic' | 'bottleneck'.
    stem: 'cifar' | 'imagenet'.
    init_scheme: weight-initialisation scheme.
    dtype: computation dtype (parameters stay float32; logits are returned float32).
    conv_general_dilated: the convs' formulation (models/cpu_conv.py; XLA's by default).
  """

  num_classes: int
  stage_sizes: tuple
  stage_widths: tuple
  block: str = 'basic'
  stem: str = 'cifar'
  init_scheme: Init = Init('kaiming')
  dtype: Any = jnp.float32
  conv_general_dilated: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool = False):
    # PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5; gamma 1, beta 0.
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    block_cls = {'basic': BasicBlock, 'bottleneck': Bottleneck}[self.block]
    reps = collections.OrderedDict()  # kept in forward order by jit (a plain dict is sorted)
    x = x.astype(self.dtype)
    width = self.stage_widths[0]
    if self.stem == 'cifar':
      x = _conv(
        self.init_scheme,
        self.dtype,
        width,
        3,
        1,
        'stem_conv',
        x.shape[-1],
        self.conv_general_dilated,
      )(x)
      x = nn.relu(norm(name='stem_bn')(x))
    elif self.stem == 'imagenet':
      x = _conv(
        self.init_scheme,
        self.dtype,
        width,
        7,
        2,
        'stem_conv',
        x.shape[-1],
        self.conv_general_dilated,
      )(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; valid: 'cifar', 'imagenet'.")
    reps['stem'] = x

    for s, (n_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      for b in range(n_blocks):
        stride = 2 if (s > 0 and b == 0) else 1
        name = f'block{s + 1}_{b}'
        x = block_cls(
          features, stride, self.init_scheme, norm, self.dtype, self.conv_general_dilated, name=name
        )(x)
        reps[name] = x

    x = jnp.mean(x, axis=(1, 2))
    reps['pool'] = x
    logits = nn.Dense(
      self.num_classes, dtype=self.dtype, name='head', **self.init_scheme.dense(x.shape[-1])
    )(x)
    return logits.astype(jnp.float32), reps


def resnet(
  name: str,
  num_classes: int,
  *,
  stem: str,
  init: Init,
  dtype=jnp.float32,
  conv_general_dilated: Callable = lax.conv_general_dilated,
) -> ResNet:
  """Builds one of `RESNET_SPECS` by name."""
  if stem not in ('cifar', 'imagenet'):
    raise ValueError(f"Unknown ResNet stem {stem!r}; valid: 'cifar', 'imagenet'.")
  block, sizes, widths = RESNET_SPECS[name]
  return ResNet(
    num_classes=num_classes,
    stage_sizes=sizes,
    stage_widths=widths,
    block=block,
    stem=stem,
    init_scheme=init,
    dtype=dtype,
    conv_general_dilated=conv_general_dilated,
  )
