"""Weight-initialisation schemes of the paper (App. E) as Flax initializers.

The initial logits norm decides the training regime (paper Sec. 4, App. E): an 8-layer ReLU
MLP under the PyTorch default init starts with a logits norm orders of magnitude below the
same MLP under Kaiming init. So the scheme is an explicit, per-run choice (`config.model.init`)
and every model builds its weight layers through `Init.dense` / `Init.conv`.

Schemes (kernel / bias):
  'kaiming'      He normal, fan_in, gain sqrt(2) (torch `kaiming_normal_` defaults) / zeros.
  'pytorch'      PyTorch's default for nn.Linear and nn.Conv2d: kaiming_uniform(a=sqrt(5)),
                 i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) / U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  'normal'       N(0, sigma^2) with sigma = `config.model.init_sigma` / zeros.
  'torchvision'  torchvision's ResNet: convs He normal with fan_out (bias zeros), Dense layers
                 keep the PyTorch default (torchvision does not re-initialise the fc layer).
  'xavier'       Glorot uniform / zeros (the ViT convention of big_vision / vit_jax).

fan_in is `in_features` for Dense and `kh * kw * in_channels` for Conv, as in PyTorch.
The PyTorch bias rule depends on the fan_in of the *kernel*, which a Flax bias initializer
(that only sees the bias shape) cannot know, so the modules pass fan_in in and get a closure.
Normalisation layers (BatchNorm, LayerNorm) always start at scale 1, bias 0.
"""

import dataclasses
import math
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

INIT_SCHEMES = ('kaiming', 'pytorch', 'normal', 'torchvision', 'xavier')

Initializer = Any  # a jax.nn.initializers callable (key, shape, dtype) -> array


def uniform_symmetric(bound: float) -> Initializer:
  """U(-bound, bound); jax's `uniform` only samples [0, scale)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


# He normal fan_in: std = sqrt(2 / fan_in), untruncated like torch.nn.init.kaiming_normal_.
kaiming_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
# fan_out variant used for convs by torchvision's ResNet (fan_out = kh * kw * out_channels).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# kaiming_uniform(a=sqrt(5)): gain^2 = 2 / (1 + 5) = 1/3, bound = sqrt(3 * gain^2 / fan_in)
# = 1 / sqrt(fan_in). variance_scaling reads fan_in from the kernel shape itself.
pytorch_kernel = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def pytorch_bias(fan_in: int) -> Initializer:
  """PyTorch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in of the kernel."""
  return uniform_symmetric(1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


@dataclasses.dataclass(frozen=True)
class Init:
  """A named initialisation scheme; hands out `kernel_init` / `bias_init` per layer.

  Usage inside a module: `nn.Dense(features, **init.dense(x.shape[-1]))`,
  `nn.Conv(features, (3, 3), **init.conv(3 * 3 * x.shape[-1]))`.
  """

  scheme: str = 'kaiming'
  sigma: float = 0.01

  def __post_init__(self):
    if self.scheme not in INIT_SCHEMES:
      raise ValueError(f'Unknown init scheme {self.scheme!r}; valid: {", ".join(INIT_SCHEMES)}.')

  def dense(self, fan_in: int) -> dict[str, Initializer]:
    """Initializers for an nn.Dense with `fan_in` input features."""
    if self.scheme in ('pytorch', 'torchvision'):
      return dict(kernel_init=pytorch_kernel, bias_init=pytorch_bias(fan_in))
    return dict(kernel_init=self._kernel(fan_out_convs=False), bias_init=nn.initializers.zeros)

  def conv(self, fan_in: int) -> dict[str, Initializer]:
    """Initializers for an nn.Conv whose kernel has `fan_in` = kh * kw * in_channels."""
    if self.scheme == 'pytorch':
      return dict(kernel_init=pytorch_kernel, bias_init=pytorch_bias(fan_in))
    return dict(kernel_init=self._kernel(fan_out_convs=True), bias_init=nn.initializers.zeros)

  def _kernel(self, fan_out_convs: bool) -> Initializer:
    if self.scheme == 'kaiming':
      return kaiming_normal
    if self.scheme == 'torchvision':
      return kaiming_normal_fan_out if fan_out_convs else pytorch_kernel
    if self.scheme == 'normal':
      return nn.initializers.normal(stddev=self.sigma)
    if self.scheme == 'xavier':
      return nn.initializers.xavier_uniform()
    raise AssertionError(self.scheme)  # 'pytorch' is handled by the callers
