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
  totals, all_logits = {}, []
  for batch in input_pipeline.create_eval_iterator(
    config, config.dataset, 'test', batch_size=config.eval_batch_size
  ):
    sums, logits, mask = jitted_eval_step(state, sharding.shard_batch(batch, mesh))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + v
    logits, mask = jax.device_get((logits, mask))
    all_logits.append(np.asarray(logits)[np.asarray(mask, bool)])
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  results = {f'eval/{k}': float(v) / count for k, v in totals.items()}
  logits = np.concatenate(all_logits)
  results['eval/solution_rank'] = int(spectral.numerical_rank(logits))
  results['eval/post_softmax_rank'] = int(spectral.softmax_rank(logits, temperature))
  results['eval/num_examples'] = int(count)
  return results
