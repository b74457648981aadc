"""config.target_logits_norm: T = n0 / target at step 0, kept in config.json and on resume;
the config itself is never changed (the run plan carries the chosen T)."""

import json

import jax
import pytest

from configs import quickstart
from rankdeficit import main
from rankdeficit.plan import run_plan
from rankdeficit.plan import validation
from rankdeficit.run import checkpointing
from rankdeficit.training import target_norm
from rankdeficit.training import train


def _config(**overrides):
  c = quickstart.get_config()
  c.model.width, c.model.depth = 32, 2
  c.num_train_steps, c.log_every_steps, c.eval_every_steps = 2, 1, 1000
  c.checkpoint_every_steps, c.target_logits_norm = 2, 0.5
  for key, value in overrides.items():
    c[key] = value
  return c


def test_chosen_temperature_is_initial_norm_over_target_and_survives_resume(tmp_path):
  devices = jax.devices()[:1]
  config = _config()
  _, results = train.train_and_evaluate(config, str(tmp_path), devices=devices)
  assert config.temperature == 1.0  # the caller's config is not changed
  saved = json.loads((tmp_path / 'config.json').read_text())
  n0 = results['init/logits_norm']
  assert results['init/temperature'] == pytest.approx(n0 / 0.5, rel=1e-5)
  assert saved['temperature'] == pytest.approx(n0 / 0.5, rel=1e-5)
  assert saved['temperature'] != 1.0  # the command's own T is not what trained
  assert checkpointing.stored_config(str(tmp_path))['temperature'] == saved['temperature']
  # The CLI's pre-flight accepts the unchanged command too, and plans the saved T.
  plan = main._preflight(_config(num_train_steps=4), str(tmp_path))  # pylint: disable=protected-access
  assert plan.initial_temperature == plan.final_temperature == saved['temperature']
  # The unchanged command (temperature=1.0 in the config) resumes under the chosen T.
  state, _ = train.train_and_evaluate(_config(num_train_steps=4), str(tmp_path), devices=devices)
  assert int(state.step) == 4
  resumed = json.loads((tmp_path / 'config.json').read_text())
  assert resumed['temperature'] == saved['temperature']
  assert run_plan.plan_from_run(str(tmp_path)).final_temperature == saved['temperature']


def test_a_fresh_run_plans_no_temperature_until_it_is_measured(tmp_path):
  config = _config()
  plan = run_plan.preflight(config, str(tmp_path / 'run'), num_devices=1, create=False)
  assert plan.temperature is None and plan.initial_temperature is None
  chosen = plan.with_temperature(target_norm.choose_temperature(plan.config, 3.0))
  assert chosen.initial_temperature == chosen.final_temperature == pytest.approx(6.0)
  assert chosen.config.temperature == pytest.approx(6.0)
  assert plan.config.temperature == config.temperature == 1.0  # neither is changed
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'overrides, field',
  [
    ({'target_logits_norm': -1.0}, 'target_logits_norm'),
    ({'target_logits_norm': float('nan')}, 'target_logits_norm'),
    ({'temperature_schedule': 'cosine', 'final_temperature': 1.0}, 'temperature_schedule'),
  ],
)
def test_bad_target_is_one_line_error(overrides, field):
  with pytest.raises(ValueError, match=f'config.{field}='):
    validation.validate_config(_config(**overrides), None, num_devices=1, create=False)
