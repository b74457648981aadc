"""The offline quickstart: dataset choice, and one tiny T=1 vs T=100 comparison on digits."""

import jax

from rankdeficit import models
from rankdeficit import quickstart
from rankdeficit.training import train


def test_auto_picks_cifar10_when_prepared_else_digits(local_data_dir, tmp_path):
  assert quickstart.pick_dataset('auto', str(tmp_path / 'empty')) == 'digits'
  assert quickstart.pick_dataset('auto', local_data_dir) == 'cifar10_jpeg'
  assert quickstart.pick_dataset('digits', local_data_dir) == 'digits'


def test_digits_runs_offline_and_reports_ranks(tmp_path, capsys):
  rows = {}
  for t in (1.0, 100.0):
    config = quickstart.quickstart_config_for('digits', '', t, epochs=1)
    state, results = train.train_and_evaluate(
      config, str(tmp_path / f'T{t:g}'), devices=jax.devices()[:1]
    )
    model = models.create_model(config.model, 10)
    rows[t] = {**results, **quickstart.representation_ranks(config, state, model)}
    assert results['eval/num_examples'] == 359  # the whole digits test split
    assert 1 <= rows[t]['rank/dense_3'] <= config.model.width
    assert 1 <= rows[t]['erank/dense_3'] <= rows[t]['rank/dense_3'] + 1e-3
  # Same seed and init: the temperature is the only difference at step 0.
  assert rows[1.0]['init/logits_norm'] == rows[100.0]['init/logits_norm']
  quickstart.print_table('digits', rows)
  out = capsys.readouterr().out
  assert '| eval/solution_rank' in out and 'T=100' in out and '| erank/dense_0' in out
  # A finished run re-run reports its final metrics again.
  config = quickstart.quickstart_config_for('digits', '', 1.0, epochs=1)
  _, again = train.train_and_evaluate(config, str(tmp_path / 'T1'), devices=jax.devices()[:1])
  assert again['eval/accuracy'] == rows[1.0]['eval/accuracy']
