"""Attention-map metrics and the ViT attention temperature, against float64 references."""

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from rankdeficit import models
from rankdeficit.metrics import attention
from rankdeficit.models import vit


def _softmax64(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_statistics_against_float64():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 6, 6)) * 2.0
  p = _softmax64(logits)
  entropy = -(p * np.log(p)).sum(-1).mean(axis=(0, 2))
  s = np.linalg.svd(p, compute_uv=False)
  q = s / s.sum(-1, keepdims=True)
  erank = np.exp(-(q * np.log(q)).sum(-1)).mean(0)
  tol = s[..., :1] * 6 * np.finfo(np.float32).eps
  rank = (s > tol).sum(-1).mean(0)
  norm = np.linalg.norm(logits, axis=-1).mean(axis=(0, 2))
  got = attention.attention_statistics(jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(got['entropy'], entropy, rtol=1e-5)
  np.testing.assert_allclose(got['effective_rank'], erank, rtol=1e-4)
  np.testing.assert_allclose(got['rank'], rank)
  np.testing.assert_allclose(got['logits_norm'], norm, rtol=1e-5)


def test_known_answers():
  t = 8
  uniform = jnp.zeros((1, 1, t, t))  # every query attends uniformly: rank 1, entropy log t
  assert float(attention.attention_rank(uniform)[0]) == 1.0
  assert float(attention.attention_entropy(uniform)[0]) == pytest.approx(np.log(t), rel=1e-6)
  sharp = 50.0 * jnp.eye(t)[None, None]  # each query attends to itself: identity, rank t
  assert float(attention.attention_rank(sharp)[0]) == t
  assert float(attention.attention_entropy(sharp)[0]) < 1e-10
  assert float(attention.attention_logits_norm(sharp)[0]) == pytest.approx(50.0)


def _tiny_vit(tau):
  c = base.get_config().model
  c.name, c.attention_temperature = 'vit_tiny', tau
  return models.create_model(c, 10)


def test_tau_one_is_standard_attention():
  mha = vit.MultiHeadDotProductAttention(num_heads=4, init_scheme=vit.Init('xavier'))
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  params = mha.init(jax.random.key(1), x)

  def reference(x):  # flax's own attention on the same projections
    n, t, d = x.shape
    proj = lambda name: params['params'][name]
    q, k, v = (
      nn.Dense(d).apply({'params': proj(nm)}, x).reshape(n, t, 4, d // 4)
      for nm in ('query', 'key', 'value')
    )
    y = nn.dot_product_attention(q, k, v)
    return nn.Dense(d).apply({'params': proj('out')}, y.reshape(n, t, d))

  np.testing.assert_allclose(mha.apply(params, x), reference(x), rtol=1e-5, atol=1e-6)


def test_tau_scales_the_logits_the_softmax_sees():
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  model1, model4 = _tiny_vit(1.0), _tiny_vit(4.0)
  variables = model1.init(jax.random.key(1), images)  # same parameters for both
  a1 = vit.attention_logits(model1, variables, images)
  a4 = jax.jit(lambda v, x: vit.attention_logits(model4, v, x))(variables, images)
  assert list(a1) == [f'block_{i}' for i in range(model1.depth)]
  assert a1['block_0'].shape == (2, model1.num_heads, 65, 65)  # 8x8 patches + class token
  # Block 0 sees the same input under both models: its logits differ exactly by 1/tau.
  np.testing.assert_allclose(a4['block_0'], a1['block_0'] / 4.0, rtol=1e-5, atol=1e-6)
  stats = attention.attention_statistics(a4['block_0'])
  assert stats['entropy'].shape == (model1.num_heads,)


def test_attention_temperature_validated():
  with pytest.raises(ValueError, match='> 0'):
    _tiny_vit(0.0)
  c = base.get_config().model
  c.name, c.attention_temperature = 'mlp', 2.0
  with pytest.raises(ValueError, match='ViTs only'):
    models.create_model(c, 10)
