"""Fully connected ReLU network (paper A.1: 8 hidden layers of 2048 units on CIFAR-10).

Forward: flatten the image, then `depth` times Dense(width) -> [LayerNorm] -> ReLU, then
the classifier Dense(num_classes).

Representations (`reps`, forward order), each after the layer's ReLU, shape [N, width]:
  'dense_0', 'dense_1', ..., 'dense_{depth-1}'   (the last one is the penultimate feature)

With `layer_norm=True` a LayerNorm sits between each hidden Dense and its ReLU (the usual
pre-activation placement, like BatchNorm in conv nets), so every hidden representation is
still "after the non-linearity" and the classifier sees ReLU features, as without it.
This is the paper's App. E / Figure 17 (bottom) "LayerNorm after hidden layers" model.
"""

import collections
from typing import Any

from flax import linen as nn
import jax.numpy as jnp

from rankdeficit.models.initializers import Init


class MLP(nn.Module):
  """Multilayer perceptron classifier.

  Attributes:
    num_classes: size of the classifier output.
    width: hidden units per layer.
    depth: number of hidden layers.
    init_scheme: weight-initialisation scheme.
    layer_norm: LayerNorm before each hidden ReLU.
    dtype: computation dtype (parameters stay float32; logits are returned float32).
  """

  num_classes: int
  width: int = 2048
  depth: int = 8
  init_scheme: Init = Init('pytorch')
  layer_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no train/eval difference (no dropout, no BatchNorm)
    reps = collections.OrderedDict()  # kept in forward order by jit (a plain dict is sorted)
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for i in range(self.depth):
      x = nn.Dense(
        self.width, dtype=self.dtype, name=f'dense_{i}', **self.init_scheme.dense(x.shape[-1])
      )(x)
      if self.layer_norm:
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=f'layer_norm_{i}')(x)
      x = nn.relu(x)
      reps[f'dense_{i}'] = x
    logits = nn.Dense(
      self.num_classes, dtype=self.dtype, name='head', **self.init_scheme.dense(x.shape[-1])
    )(x)
    return logits.astype(jnp.float32), reps
