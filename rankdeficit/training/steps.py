"""Training state and the pure step functions that `train.py` jits over the mesh.

Kept apart from the loop so that benchmarks and other code can jit a step without the
input pipeline, CLU or TensorFlow.
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from rankdeficit.data import device_preprocess
from rankdeficit.training import losses


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs, as one pytree (the grain iterator is saved beside it)."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def create_train_state(
  rng: jax.Array, model, tx: optax.GradientTransformation, image_shape
) -> TrainState:
  """Initialises parameters (and BatchNorm statistics) on a dummy batch."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables['params']
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get('batch_stats', {}),
    opt_state=tx.init(params),
    rng=state_rng,
  )


def model_variables(state: TrainState) -> dict:
  """The `{params, batch_stats}` dict that `model.apply` takes."""
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  return variables


def train_step(
  state: TrainState,
  batch: dict,
  *,
  model,
  tx,
  loss_fn: losses.LossFn,
  temperature_fn: Callable,
  preprocess: device_preprocess.DeviceNormalize | None = None,
) -> tuple[TrainState, dict]:
  """One SGD step on a global batch; returns the new state and on-device metrics.

  `preprocess` normalises (and colour-jitters) uint8 batches on the device
  (`input_pipeline.device_preprocess(config)`; data/device_preprocess.py); float batches
  are used as they are.
  """
  temperature = temperature_fn(state.step)
  images = device_preprocess.model_images(batch, preprocess)

  def compute_loss(params):
    variables = model_variables(state.replace(params=params))
    if state.batch_stats:
      (logits, _), updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
      batch_stats = updates['batch_stats']
    else:
      logits, _ = model.apply(variables, images, train=True)
      batch_stats = state.batch_stats
    loss = jnp.mean(loss_fn(logits, batch['label'], temperature))
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
    state.params
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    'loss': loss,
    'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
    'logits_norm': jnp.mean(jnp.linalg.norm(logits, axis=-1)),
    'grad_norm': optax.global_norm(grads),
    'learning_rate': opt_state.hyperparams['learning_rate'],
    'temperature': jnp.asarray(temperature, jnp.float32),
  }
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


def eval_step(
  state: TrainState, batch: dict, *, model, loss_fn: losses.LossFn, temperature_fn: Callable
) -> tuple[dict, jax.Array, jax.Array]:
  """Masked sums over one padded eval batch, plus its logits and mask (for the rank).

  Eval batches are float32, normalised on the host (a uint8 batch raises)."""
  logits, _ = model.apply(
    model_variables(state), device_preprocess.model_images(batch, None), train=False
  )
  mask = batch['mask'].astype(jnp.float32)
  per_example = loss_fn(logits, batch['label'], temperature_fn(state.step))
  sums = {
    'loss': jnp.sum(per_example * mask),
    'accuracy': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
    'logits_norm': jnp.sum(jnp.linalg.norm(logits, axis=-1) * mask),
    'count': jnp.sum(mask),
  }
  return sums, logits, batch['mask']
