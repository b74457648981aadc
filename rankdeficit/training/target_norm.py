"""The initial logits norm as the control knob: `config.target_logits_norm`.

The paper's claim (App. E, Fig. 17) is that temperature acts through the logits norm at
initialisation: inits, widths and T that give the same effective initial norm ||z_0|| / T
should train alike. With `config.target_logits_norm = r > 0` a run measures, at step 0, the
mean per-sample L2 norm n0 of its logits on the first eval batch (the same examples as
`init/logits_norm`) and trains at T = n0 / r, so its effective initial norm is r whatever
the init or width.

The chosen T is written into config.json like any other field, so a resumed run, `analyze`
and the tables use it; `adopt_saved_temperature` makes an unchanged command resume it
(the command's own `temperature` is ignored while `target_logits_norm > 0`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rankdeficit.data import input_pipeline
from rankdeficit.run import config_diff
from rankdeficit.training import sharding
from rankdeficit.training import steps


def mean_logits_norm(model, state: steps.TrainState, config, mesh) -> float:
  """Mean per-sample logits L2 norm of `state` on the first eval batch (padding masked):
  every run's `init/logits_norm`, and n0 here."""
  batch = next(
    iter(
      input_pipeline.create_eval_iterator(
        config,
        config.dataset,
        'test',
        batch_size=config.eval_batch_size,
        num_examples=config.eval_batch_size,
      )
    )
  )
  batch = sharding.shard_batch(batch, mesh)

  @jax.jit
  def norm(variables, images, mask):
    logits, _ = model.apply(variables, images, train=False)
    per_sample = jnp.linalg.norm(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(per_sample * mask) / jnp.sum(mask)

  return float(
    norm(steps.model_variables(state), batch['image'], batch['mask'].astype(jnp.float32))
  )


def choose_temperature(config: ml_collections.ConfigDict, initial_norm: float) -> float:
  """Sets and returns config.temperature = initial_norm / config.target_logits_norm."""
  temperature = initial_norm / config.target_logits_norm
  if not (math.isfinite(temperature) and temperature > 0):
    raise ValueError(
      f'config.target_logits_norm={config.target_logits_norm}: the initial '
      f'logits norm is {initial_norm}, which gives T={temperature}; this init '
      f'cannot be rescaled to a target norm.'
    )
  config.temperature = float(temperature)
  return config.temperature


def adopt_saved_temperature(config: ml_collections.ConfigDict, workdir) -> bool:
  """Resuming a `target_logits_norm` run: takes T from its saved config (chosen at step 0;
  the copy stored in the checkpoint, else config.json).

  Returns whether it did (only when the workdir has checkpoints of a run with the same
  target; anything else is left to config_diff's comparison).
  """
  if config.target_logits_norm <= 0 or not config_diff.has_checkpoint(workdir):
    return False
  saved = config_diff.saved_config(workdir)
  if saved is None or not np.isclose(
    saved.get('target_logits_norm', 0.0), config.target_logits_norm
  ):
    return False
  config.temperature = float(saved['temperature'])
  return True
