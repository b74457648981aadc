"""Vision Transformer (Dosovitskiy et al. 2021) and its pretrained-weight loader (paper A.1).

Pre-LN encoder: patch embedding (a strided conv), a learned class token, learned position
embeddings, L blocks of x + MHA(LN(x)), x + MLP(LN(x)) with GELU, a final LayerNorm, and
the linear head on the class token.

Submodules carry the names of the public big_vision / vit_jax ("augreg") checkpoints, so
`load_pretrained` is (almost) an identity map from the .npz:
  embedding/{kernel,bias}, cls, Transformer/posembed_input/pos_embedding,
  Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
  MlpBlock_3/Dense_0, MlpBlock_3/Dense_1}, Transformer/encoder_norm, head.
The one difference: query/key/value/out are plain nn.Dense over the flattened heads
([D, D] kernels) so the monitor can intercept them like every other weight layer, while the
public files store them per head ([D, H, D/H] and [H, D/H, D]); the loader reshapes.

Representations (`reps`, forward order), tokens [N, 1 + num_patches, D]:
  'embed'                    patch embeddings + class token + position embeddings
  'block_0' ... 'block_{L-1}'  output of each encoder block (after its residual add)
  'pre_logits'               [N, D] final-LayerNorm'd class token (penultimate feature)
"""

import collections
import logging
from typing import Any

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.models.initializers import Init

# name -> (patch size, width, depth, heads, mlp dim)
VIT_SPECS = {
  'vit_b16': (16, 768, 12, 12, 3072),
  'vit_s16': (16, 384, 12, 6, 1536),
  'vit_ti16': (16, 192, 12, 3, 768),
  # CPU-sized model for 32x32 inputs: 8x8 patches of 4x4 pixels, width 256 (> 200 classes
  # of Tiny-ImageNet, so the penultimate width does not cap the solution rank).
  'vit_tiny': (4, 256, 4, 4, 512),
  # Smallest: the same 65 tokens at width 64 (4 heads of 16), for from-scratch CIFAR runs
  # of about a minute on 2 CPU cores (configs/vit_c10_cpu.py, attention temperature).
  'vit_mini': (4, 64, 4, 4, 128),
}


class MlpBlock(nn.Module):
  mlp_dim: int
  init_scheme: Init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name='Dense_0', **self.init_scheme.dense(d))(x)
    x = nn.gelu(x)  # tanh approximation, as the public JAX checkpoints were trained with
    return nn.Dense(d, dtype=self.dtype, name='Dense_1', **self.init_scheme.dense(self.mlp_dim))(x)


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with plain nn.Dense projections (see the module docstring).

  The attention is softmax(q k^T / (attention_temperature * sqrt(head_dim))) v: the same
  temperature-scaled softmax the paper studies at the output, with its own temperature
  (1 = the standard transformer). The softmax input, [N, heads, queries, keys], is sown as
  `intermediates/attention_logits` (free unless applied with mutable=['intermediates']; see
  `attention_logits`).
  """

  num_heads: int
  init_scheme: Init
  dtype: Any = jnp.float32
  attention_temperature: float = 1.0

  @nn.compact
  def __call__(self, x):
    n, t, d = x.shape
    head_dim = d // self.num_heads
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name, **self.init_scheme.dense(d))
    q, k, v = (
      dense(name)(x).reshape(n, t, self.num_heads, head_dim) for name in ('query', 'key', 'value')
    )
    scale = 1.0 / (self.attention_temperature * np.sqrt(head_dim))
    logits = jnp.einsum('nqhd,nkhd->nhqk', q * jnp.asarray(scale, q.dtype), k)
    self.sow('intermediates', 'attention_logits', logits)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    y = jnp.einsum('nhqk,nkhd->nqhd', probs, v)
    return dense('out')(y.reshape(n, t, d))


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  init_scheme: Init
  dtype: Any = jnp.float32
  attention_temperature: float = 1.0

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(dtype=self.dtype, name='LayerNorm_0')(x)
    x = x + MultiHeadDotProductAttention(
      self.num_heads,
      self.init_scheme,
      self.dtype,
      self.attention_temperature,
      name='MultiHeadDotProductAttention_1',
    )(y)
    y = nn.LayerNorm(dtype=self.dtype, name='LayerNorm_2')(x)
    return x + MlpBlock(self.mlp_dim, self.init_scheme, self.dtype, name='MlpBlock_3')(y)


class PosEmbedding(nn.Module):
  @nn.compact
  def __call__(self, x):
    pe = self.param('pos_embedding', nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
    return x + pe.astype(x.dtype)


class Transformer(nn.Module):
  depth: int
  num_heads: int
  mlp_dim: int
  init_scheme: Init
  dtype: Any = jnp.float32
  attention_temperature: float = 1.0

  @nn.compact
  def __call__(self, x):
    reps = collections.OrderedDict()
    x = PosEmbedding(name='posembed_input')(x)
    reps['embed'] = x
    for i in range(self.depth):
      x = EncoderBlock(
        self.num_heads,
        self.mlp_dim,
        self.init_scheme,
        self.dtype,
        self.attention_temperature,
        name=f'encoderblock_{i}',
      )(x)
      reps[f'block_{i}'] = x
    return nn.LayerNorm(dtype=self.dtype, name='encoder_norm')(x), reps


class ViT(nn.Module):
  """Vision Transformer classifier (class-token pooling, no dropout).

  Attributes:
    num_classes: size of the classifier output.
    patch_size, width, depth, num_heads, mlp_dim: the usual ViT hyper-parameters.
    init_scheme: weight-initialisation scheme of every Dense/Conv ('xavier' is the ViT
      convention). The head is not zero-initialised as in big_vision: zero logits would put
      every run in the degenerate zero-logits-norm regime this project studies.
    dtype: computation dtype (parameters stay float32; logits are returned float32).
    attention_temperature: tau in softmax(q k^T / (tau sqrt(d))) of every attention layer.
  """

  num_classes: int
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  init_scheme: Init = Init('xavier')
  dtype: Any = jnp.float32
  attention_temperature: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout: fine-tuning and the CPU runs use none
    p = self.patch_size
    x = nn.Conv(
      self.width,
      (p, p),
      strides=(p, p),
      padding='VALID',
      dtype=self.dtype,
      name='embedding',
      **self.init_scheme.conv(p * p * x.shape[-1]),
    )(x.astype(self.dtype))
    n, h, w, d = x.shape
    x = x.reshape(n, h * w, d)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, d)), x], axis=1)
    # An OrderedDict keeps forward order through jit (a plain dict comes back key-sorted).
    x, reps = Transformer(
      self.depth,
      self.num_heads,
      self.mlp_dim,
      self.init_scheme,
      self.dtype,
      self.attention_temperature,
      name='Transformer',
    )(x)
    x = x[:, 0]
    reps['pre_logits'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head', **self.init_scheme.dense(d))(
      x
    )
    return logits.astype(jnp.float32), reps


def sown_attention_logits(intermediates) -> dict[str, jax.Array]:
  """{'block_i': softmax input [N, heads, tokens, tokens]}, forward order, float32, from the
  `intermediates` collection of a ViT applied with mutable=['intermediates'] ({} for any
  other model, which sows nothing)."""
  blocks = (intermediates or {}).get('Transformer', {})
  out = collections.OrderedDict()
  for i in range(len(blocks)):
    sown = blocks[f'encoderblock_{i}']['MultiHeadDotProductAttention_1']['attention_logits']
    out[f'block_{i}'] = sown[0].astype(jnp.float32)
  return out


def attention_logits(model: ViT, variables, images) -> dict[str, jax.Array]:
  """{'block_i': softmax input [N, heads, tokens, tokens]} of every attention layer, forward
  order, float32 (jittable; `images` as for `model.apply`)."""
  _, state = model.apply(variables, images, train=False, mutable=['intermediates'])
  return sown_attention_logits(state.get('intermediates'))


# --------------------------------------------------------------------------------------
# Pretrained weights: public .npz <-> our params.

_ATTN = '/MultiHeadDotProductAttention_1/'


def _public_shape(key: str, shape: tuple, num_heads: int) -> tuple:
  """Shape the public per-head checkpoint stores for our parameter `key` of `shape`."""
  if _ATTN not in key:
    return shape
  d = shape[-1]
  hd = (num_heads, d // num_heads)
  if key.endswith(('query/kernel', 'key/kernel', 'value/kernel')):
    return (shape[0],) + hd
  if key.endswith(('query/bias', 'key/bias', 'value/bias')):
    return hd
  if key.endswith('out/kernel'):
    return hd + (d,)
  return shape  # out/bias


def to_public(params, num_heads: int) -> dict[str, np.ndarray]:
  """Flat {public name: array} in the big_vision / vit_jax layout (e.g. to save as .npz)."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  return {k: np.asarray(v).reshape(_public_shape(k, v.shape, num_heads)) for k, v in flat.items()}


def _resize_posemb(pe: np.ndarray, target_shape: tuple) -> np.ndarray:
  """Bilinearly resizes the patch-grid part of [1, 1 + g*g, D] pos-embeddings (cls kept)."""
  cls_pe, grid = pe[:, :1], pe[0, 1:]
  g_old, g_new = int(round(np.sqrt(grid.shape[0]))), int(round(np.sqrt(target_shape[1] - 1)))
  if g_old * g_old != grid.shape[0] or g_new * g_new != target_shape[1] - 1:
    raise ValueError(f'Cannot resize non-square position embeddings {pe.shape} -> {target_shape}.')
  grid = grid.reshape(g_old, g_old, -1)
  grid = jax.image.resize(grid, (g_new, g_new, grid.shape[-1]), method='bilinear')
  logging.info(
    'Resized position embeddings from a %dx%d to a %dx%d grid.', g_old, g_old, g_new, g_new
  )
  return np.concatenate([cls_pe, np.asarray(grid).reshape(1, g_new * g_new, -1)], axis=1)


def _stored_heads(stored: dict[str, np.ndarray], num_heads: int | None) -> int:
  """The attention heads of a checkpoint's model: `num_heads`, checked against the file's
  when both are known (ValueError if they differ), else the file's, else 1."""
  # The attention 'query' kernel is [D, D] here; D / head_dim comes from the file.
  q_key = next((k for k in stored if k.endswith(_ATTN[1:] + 'query/kernel')), None)
  file_heads = stored[q_key].shape[1] if q_key is not None and stored[q_key].ndim == 3 else None
  if num_heads is not None and file_heads is not None and file_heads != num_heads:
    raise ValueError(f'Pretrained {q_key!r} has {file_heads} heads, the model has {num_heads}.')
  return num_heads or file_heads or 1


def _pretrained_value(key: str, ours: np.ndarray, value: np.ndarray, num_heads: int):
  """The stored `value` of parameter `key` in our layout (`ours`: the model's own), or
  `ours` for a head of another number of classes; position embeddings are resized."""
  expected = _public_shape(key, ours.shape, num_heads)
  if key.startswith('head/') and value.shape != expected:
    logging.info(
      'Pretrained head %s has shape %s, the model needs %s: keeping the freshly initialised head.',
      key,
      value.shape,
      expected,
    )
    return ours
  if key.endswith('posembed_input/pos_embedding') and value.shape != expected:
    if value.ndim != 3 or value.shape[-1] != expected[-1]:
      raise ValueError(f'Pretrained {key!r} has shape {value.shape}, expected {expected}.')
    value = _resize_posemb(value, expected)
  if value.shape != expected:
    raise ValueError(f'Pretrained {key!r} has shape {value.shape}, expected {expected}.')
  return np.asarray(value, dtype=ours.dtype).reshape(ours.shape)


def load_pretrained(params, path: str, *, num_heads: int | None = None):
  """Returns `params` with every weight replaced by the one stored in the .npz at `path`.

  The file is read with `allow_pickle=False` (never unpickle a file you were handed). Every
  parameter of the model must be present under its public name with the public shape
  (ValueError naming the key otherwise), except that
    * the head is kept as initialised (and logged) when its number of classes differs, as
      when fine-tuning an ImageNet-21k/1k checkpoint on CIFAR;
    * position embeddings are bilinearly resized when the patch grid differs (other image
      resolution).
  Extra keys in the file (e.g. an unused `pre_logits` layer) are ignored and logged.

  Args:
    params: the model's `variables['params']` (a pytree, e.g. from `model.init`).
    path: local .npz path; nothing is ever downloaded.
    num_heads: the model's attention heads; checked against the file when given (our [D, D]
      projections do not record it), else taken from the file.
  Returns:
    A new params pytree with the same structure, shapes and dtypes as `params`.
  """
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  with np.load(path, allow_pickle=False) as f:
    stored = {k: f[k] for k in f.files}
  num_heads = _stored_heads(stored, num_heads)
  out = {}
  for key, ours in flat.items():
    if key not in stored:
      raise ValueError(
        f'Pretrained checkpoint {path} has no parameter {key!r} '
        f'(expected shape {_public_shape(key, ours.shape, num_heads)}).'
      )
    out[key] = _pretrained_value(key, ours, stored[key], num_heads)
  extra = sorted(set(stored) - set(flat))
  if extra:
    logging.info(
      'Ignoring %d checkpoint entries the model does not use: %s', len(extra), ', '.join(extra[:10])
    )
  return traverse_util.unflatten_dict(out, sep='/')
