"""Exact evaluation: every test example scored once, plus the solution and post-softmax ranks.

`evaluate` runs the jitted eval step (`steps.eval_step`, compiled by the training loop in
rankdeficit/training/train.py) over the whole test split in padded, masked batches sharded
over the mesh's `data` axis, and returns the `eval/*` metrics the loop writes and logs.
"""

import jax
import numpy as np

from rankdeficit.data import input_pipeline
from rankdeficit.metrics import spectral
from rankdeficit.training import sharding
from rankdeficit.training import steps


def evaluate(
  jitted_eval_step, state: steps.TrainState, config, mesh, temperature: float
) -> dict[str, float]:
  """Scores every example of the test split exactly once (padded batches are masked).

  Also computes the solution rank SR (numerical rank of the pre-softmax logits over the
  whole eval set) and the post-softmax rank at the current temperature.
  """
  totals, logits = score_test_split(lambda batch: jitted_eval_step(state, batch), config, mesh)
  return eval_results(totals, logits, temperature)


def score_test_split(score_batch, config, mesh) -> tuple[dict, np.ndarray]:
  """Runs `score_batch(sharded batch) -> (sums, logits, mask)` over the padded test split.

  Returns the summed `sums` (with `count`, the real examples) and the logits of the real
  rows, kept along axis -2 by the `[batch]` mask (leading axes, e.g. a population's
  members, are kept).
  """
  totals, all_logits = {}, []
  for batch in input_pipeline.create_eval_iterator(
    config, config.dataset, 'test', batch_size=config.eval_batch_size
  ):
    sums, logits, mask = score_batch(sharding.shard_batch(batch, mesh))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + v
    logits, mask = jax.device_get((logits, mask))
    all_logits.append(np.compress(np.asarray(mask, bool), np.asarray(logits), axis=-2))
  return jax.device_get(totals), np.concatenate(all_logits, axis=-2)


def eval_results(totals: dict, logits: np.ndarray, temperature: float) -> dict[str, float]:
  """The `eval/*` metrics of one network from its summed scores and test logits `[n, C]`."""
  count = float(totals['count'])
  results = {f'eval/{k}': float(v) / count for k, v in totals.items() if k != 'count'}
  results['eval/solution_rank'] = int(spectral.numerical_rank(logits))
  results['eval/post_softmax_rank'] = int(spectral.softmax_rank(logits, float(temperature)))
  results['eval/num_examples'] = int(count)
  return results
