"""VGG-19 for 32x32 inputs (paper A.1; the CIFAR variant of /work/shared/bench/torch_ref.py).

Five stages of 3x3 convolutions (with bias, padding 1) of 64, 128, 256, 512, 512 channels
(2, 2, 4, 4, 4 convs), each conv followed by [BatchNorm ->] ReLU, each stage closed by a 2x2
max-pool. The features are flattened (1x1x512 for 32x32 inputs) and go through the
classifier Dense(512) -> ReLU -> Dense(512) -> ReLU -> Dense(num_classes).
`vgg19` has no normalisation (the paper's collapsed-at-init baseline: its initial logits
norm is orders of magnitude below ResNets', Figure 8); `vgg19_bn` adds BatchNorm after every
conv, as in torch_ref.py.

Representations (`reps`, forward order), each after the layer's ReLU:
  'conv_0' ... 'conv_15'   [N, H, W, C] (before the stage's max-pool)
  'fc_0', 'fc_1'           [N, 512]     ('fc_1' is the penultimate feature)
"""

import collections
from typing import Any, Callable

from flax import linen as nn
from jax import lax
import jax.numpy as jnp

from rankdeficit.models.initializers import Init

# Channels per conv; 'M' is a 2x2 max-pool. Standard VGG "E" configuration (19 layers).
VGG19_CFG = (
  64,
  64,
  'M',
  128,
  128,
  'M',
  256,
  256,
  256,
  256,
  'M',
  512,
  512,
  512,
  512,
  'M',
  512,
  512,
  512,
  512,
  'M',
)


class VGG(nn.Module):
  """VGG classifier for small images.

  Attributes:
    num_classes: size of the classifier output.
    cfg: conv channels and 'M' (max-pool) markers.
    batch_norm: BatchNorm after every conv (collection `batch_stats`).
    fc_width: width of the two hidden classifier layers.
    init_scheme: weight-initialisation scheme.
    dtype: computation dtype (parameters stay float32; logits are returned float32).
    conv_general_dilated: the convs' formulation (models/cpu_conv.py; XLA's by default).
  """

  num_classes: int
  cfg: tuple = VGG19_CFG
  batch_norm: bool = False
  fc_width: int = 512
  init_scheme: Init = Init('pytorch')
  dtype: Any = jnp.float32
  conv_general_dilated: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool = False):
    reps = collections.OrderedDict()  # kept in forward order by jit (a plain dict is sorted)
    x = x.astype(self.dtype)
    i = 0
    for v in self.cfg:
      if v == 'M':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = nn.Conv(
        v,
        (3, 3),
        padding=((1, 1), (1, 1)),
        dtype=self.dtype,
        name=f'conv_{i}',
        conv_general_dilated=self.conv_general_dilated,
        **self.init_scheme.conv(9 * x.shape[-1]),
      )(x)
      if self.batch_norm:
        # PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5.
        x = nn.BatchNorm(
          use_running_average=not train,
          momentum=0.9,
          epsilon=1e-5,
          dtype=self.dtype,
          name=f'bn_{i}',
        )(x)
      x = nn.relu(x)
      reps[f'conv_{i}'] = x
      i += 1
    x = x.reshape((x.shape[0], -1))
    for j in range(2):
      x = nn.Dense(
        self.fc_width, dtype=self.dtype, name=f'fc_{j}', **self.init_scheme.dense(x.shape[-1])
      )(x)
      x = nn.relu(x)
      reps[f'fc_{j}'] = x
    logits = nn.Dense(
      self.num_classes, dtype=self.dtype, name='head', **self.init_scheme.dense(x.shape[-1])
    )(x)
    return logits.astype(jnp.float32), reps
