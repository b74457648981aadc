"""The train-time monitor reports attention-map statistics of a ViT (and none for others)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import base
from rankdeficit import models
from rankdeficit.metrics import attention
from rankdeficit.models import vit
from rankdeficit.training import monitor


def _loss(logits, labels, temperature):
  return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, labels).mean()


def test_vit_attention_statistics_in_the_monitor():
  c = base.get_config().model
  c.name, c.attention_temperature = 'vit_mini', 2.0  # the zoo's smallest: 4 blocks, 65 tokens
  model = models.create_model(c, 10)
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jnp.arange(4) % 10
  variables = model.init(jax.random.key(1), images)
  out = monitor.make_collapse_metrics_fn(model, _loss, max_dims=64, top_k=4)(
    variables, images, labels, 1.0, jax.random.key(2)
  )
  direct = vit.attention_logits(model, variables, images)
  for i in range(4):
    want = attention.attention_statistics(direct[f'block_{i}'])
    for stat in ('rank', 'effective_rank', 'entropy', 'logits_norm'):
      np.testing.assert_allclose(out[f'attention/{stat}/block_{i}'], np.mean(want[stat]), rtol=1e-4)
  assert 1 <= float(out['attention/rank/block_0']) <= 65


def test_models_without_attention_report_none():
  c = base.get_config().model
  c.name, c.width, c.depth = 'mlp', 16, 2
  model = models.create_model(c, 10)
  images = jnp.ones((4, 32, 32, 3))
  out = monitor.make_collapse_metrics_fn(model, _loss, max_dims=64, top_k=4)(
    model.init(jax.random.key(0), images), images, jnp.arange(4), 1.0, jax.random.key(1)
  )
  assert not [k for k in out if k.startswith('attention/')]
  assert 'rank/rep/dense_1' in out
