"""Temperature-scaled classification losses and temperature schedules.

The paper's object of study is softmax_T(z) = softmax(z / T). Raising T (or, equivalently,
keeping the logits norm small) is what drives the rank-deficit bias, so both losses below
take the temperature as an explicit argument rather than folding it into the model.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LOSS_NAMES = ('ce', 'mse')
TEMPERATURE_SCHEDULES = ('constant', 'linear', 'cosine', 'step')

LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, temperature) -> jax.Array:
  """Per-example cross-entropy of softmax(logits / T) against integer labels.

  Args:
    logits: [N, C] pre-softmax outputs.
    labels: [N] integer class ids.
    temperature: scalar T > 0.
  Returns:
    [N] losses (float32).
  """
  scaled = logits.astype(jnp.float32) / temperature
  return optax.softmax_cross_entropy_with_integer_labels(scaled, labels)


def softmax_mse(logits: jax.Array, labels: jax.Array, temperature) -> jax.Array:
  """Per-example MSE between softmax(logits / T) and one-hot targets (paper App. F).

  Averaged over classes, so that the batch mean equals PyTorch's
  `F.mse_loss(softmax(z / T), one_hot)` with its default 'mean' reduction.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  return jnp.mean(jnp.square(probs - targets), axis=-1)


def get_loss_fn(name: str) -> LossFn:
  """Returns the per-example loss `fn(logits, labels, temperature) -> [N]`."""
  losses = {'ce': cross_entropy, 'mse': softmax_mse}
  if name not in losses:
    raise ValueError(f'Unknown loss {name!r}; choose one of {LOSS_NAMES}.')
  return losses[name]


def temperature_schedule(
  kind: str, initial: float, final: float | None, total_steps: int, milestones_steps=()
) -> Callable:
  """A jittable `step -> T` function.

  - constant: T = initial.
  - linear / cosine: from `initial` at step 0 to `final` at `total_steps`.
  - step: starts at `initial` and moves geometrically towards `final` at each milestone,
    reaching `final` at the last one (a single milestone jumps straight to `final`).

  A temperature schedule is the paper's stated future work: it lets one e.g. start in the
  collapse-prone high-T regime and anneal back to T = 1.
  """
  if kind not in TEMPERATURE_SCHEDULES:
    raise ValueError(
      f'Unknown temperature schedule {kind!r}; choose one of {TEMPERATURE_SCHEDULES}.'
    )
  if kind == 'constant':
    return optax.constant_schedule(initial)
  if final is None or final <= 0:
    raise ValueError(f'temperature_schedule={kind!r} needs final_temperature > 0, got {final}.')
  if kind == 'linear':
    return optax.linear_schedule(initial, final, max(total_steps, 1))
  if kind == 'cosine':
    return optax.cosine_decay_schedule(initial, max(total_steps, 1), alpha=final / initial)
  if not milestones_steps:
    raise ValueError("temperature_schedule='step' needs temperature_milestones.")
  ratio = (final / initial) ** (1.0 / len(milestones_steps))
  return optax.piecewise_constant_schedule(initial, {int(s): ratio for s in milestones_steps})
