"""The initial logits norm as the control knob: `config.target_logits_norm`.

The paper's claim (App. E, Fig. 17) is that temperature acts through the logits norm at
initialisation: inits, widths and T that give the same effective initial norm ||z_0|| / T
should train alike. With `config.target_logits_norm = r > 0` a run measures, at step 0, the
mean per-sample L2 norm n0 of its logits on the first eval batch (the same examples as
`init/logits_norm`) and trains at T = n0 / r, so its effective initial norm is r whatever
the init or width.

Nothing here changes a config: `choose_temperature` returns T, and the training loop
continues with `plan.with_temperature(T)` (rankdeficit/plan/run_plan.py), whose config is
written into config.json and every checkpoint, so a resumed run, `analyze` and the tables
use it. A resumed run's pre-flight adopts that saved T, so an unchanged command resumes it
(the command's own `temperature` is ignored while `target_logits_norm > 0`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from rankdeficit.data import input_pipeline
from rankdeficit.training import sharding
from rankdeficit.training import steps


def mean_logits_norm(model, state: steps.TrainState, config, mesh) -> float:
  """Mean per-sample logits L2 norm of `state` on the first eval batch (padding masked):
  every run's `init/logits_norm`, and n0 here."""
  batch = input_pipeline.first_test_batch(config, config.eval_batch_size)
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
  """T = initial_norm / config.target_logits_norm (`config` is not changed)."""
  temperature = initial_norm / config.target_logits_norm
  if not (math.isfinite(temperature) and temperature > 0):
    raise ValueError(
      f'config.target_logits_norm={config.target_logits_norm}: the initial '
      f'logits norm is {initial_norm}, which gives T={temperature}; this init '
      f'cannot be rescaled to a target norm.'
    )
  return float(temperature)
