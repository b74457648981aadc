"""Training state and the pure step functions that `train.py` jits over the mesh.

Kept apart from the loop so that benchmarks and other code can jit a step without the
input pipeline, CLU or TensorFlow. `train_steps` runs several steps in one program on a
dataset held on the device (data/device_data.py, `config.input_on_device`).
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from rankdeficit.data import device_data
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
    'grad_norm': optax.tree.norm(grads),
    'learning_rate': opt_state.hyperparams['learning_rate'],
    'temperature': jnp.asarray(temperature, jnp.float32),
  }
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


def train_steps(
  state: TrainState,
  dataset: device_data.DeviceDataset,
  key: jax.Array,
  *,
  num_steps: int,
  batch_size: int,
  augment: str,
  model,
  tx,
  loss_fn: losses.LossFn,
  temperature_fn: Callable,
  preprocess: device_preprocess.DeviceNormalize | None = None,
  sharding: jax.sharding.Sharding | None = None,
) -> tuple[TrainState, dict]:
  """`num_steps` train steps in one `lax.scan`, each on `device_data.device_batch(dataset,
  key, state.step)`; returns the final state and the per-step metrics stacked [num_steps].

  `preprocess` defaults to the dataset's own normalisation (`DeviceDataset.normalizer`);
  `sharding` places each batch (the mesh's data sharding; None: XLA's choice).
  """
  preprocess = preprocess or dataset.normalizer()
  if preprocess is None:
    raise ValueError(
      'The dataset carries no normalisation statistics: pass preprocess= (a '
      'device_preprocess.DeviceNormalize), or load it with device_data.load_device_dataset.'
    )

  def one_step(state, _):
    batch = device_data.device_batch(
      dataset, key, state.step, batch_size=batch_size, augment=augment, sharding=sharding
    )
    return train_step(
      state,
      batch,
      model=model,
      tx=tx,
      loss_fn=loss_fn,
      temperature_fn=temperature_fn,
      preprocess=preprocess,
    )

  if num_steps == 1:
    # No loop for one step: XLA's CPU backend leaves convolutions inside a loop body
    # uncanonicalised and runs their kernel gradients ~40x slower (jaxlib 0.10.2).
    state, metrics = one_step(state, None)
    return state, jax.tree.map(lambda x: x[None], metrics)
  return jax.lax.scan(one_step, state, None, length=num_steps)


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
