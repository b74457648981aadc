"""Rank-deficit metrics of attention maps: the attention softmax as a temperature softmax.

Every attention layer applies softmax(q k^T / (tau sqrt(d))): the paper's mechanism (the
post-softmax rank is driven by the scale of the softmax input, Fig. 6, Prop. 3.1) applies
to it with the attention logits in place of the output logits. Related work: attention
entropy collapse (Zhai et al., 2023, "Stabilizing Transformer Training by Preventing
Attention Entropy Collapse") and rank collapse of pure attention (Dong et al., 2021,
"Attention is not all you need").

Every function takes the softmax input `logits` [N, heads, queries, keys] (as sown by
`rankdeficit.models.vit`) and returns one value per head, [heads], averaged over the N
examples (and, for per-query quantities, over the queries). Aggregation: a per-(example,
head) statistic of the queries x keys attention matrix, then the mean over examples; the
monitor and `analyze` also report the mean over heads. Inputs sharded over an Explicit
mesh are replicated first (`placement.replicated`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rankdeficit.metrics import checks
from rankdeficit.metrics import placement
from rankdeficit.metrics import spectral


@jax.jit
@placement.replicate_inputs
def attention_probabilities(logits: jax.Array) -> jax.Array:
  """softmax over keys, in float32: [N, heads, queries, keys]."""
  checks.real('logits', logits)
  return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)


@jax.jit
@placement.replicate_inputs
def attention_entropy(logits: jax.Array) -> jax.Array:
  """Mean Shannon entropy (nats) of each query's attention distribution, per head [heads].

  log(keys) for uniform attention, 0 for one-hot attention.
  """
  checks.real('logits', logits)
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)  # [N, H, Q]
  return jnp.mean(entropy, axis=(0, 2))


@jax.jit
@placement.replicate_inputs
def attention_rank(logits: jax.Array) -> jax.Array:
  """Mean numerical rank (PyTorch-default tolerance) of the per-example, per-head
  queries x keys attention-probability matrix, per head [heads] (float: a mean of ints)."""
  ranks = spectral.numerical_rank(attention_probabilities(logits))  # [N, H]
  return jnp.mean(ranks.astype(jnp.float32), axis=0)


@jax.jit
@placement.replicate_inputs
def attention_effective_rank(logits: jax.Array) -> jax.Array:
  """Mean effective rank (Roy & Vetterli) of the attention-probability matrices, per head."""
  return jnp.mean(spectral.effective_rank(attention_probabilities(logits)), axis=0)


@jax.jit
@placement.replicate_inputs
def attention_logits_norm(logits: jax.Array) -> jax.Array:
  """Mean per-query L2 norm of the softmax input, per head [heads]: the attention analogue
  of the paper's mean per-sample logits norm (the temperature is already divided in)."""
  checks.real('logits', logits)
  norms = jnp.linalg.norm(jnp.asarray(logits, jnp.float32), axis=-1)  # [N, H, Q]
  return jnp.mean(norms, axis=(0, 2))


def attention_statistics(logits: jax.Array) -> dict[str, jax.Array]:
  """All four per-head statistics of one layer: {'rank', 'effective_rank', 'entropy',
  'logits_norm'}, each [heads]."""
  return {
    'rank': attention_rank(logits),
    'effective_rank': attention_effective_rank(logits),
    'entropy': attention_entropy(logits),
    'logits_norm': attention_logits_norm(logits),
  }
