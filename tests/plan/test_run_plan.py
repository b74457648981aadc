"""The frozen run plan: every derived value decided once, the config never changed, the
checks run once, and a saved run's plan for load_run and the analysis."""

import jax
import ml_collections
import pytest

from configs import quickstart
from rankdeficit.plan import run_plan
from rankdeficit.plan import validation
from rankdeficit.run import config_diff
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock
from rankdeficit.training import train


def _config(**overrides):
  c = quickstart.get_config()
  c.model.width, c.model.depth = 32, 2
  c.num_train_steps, c.log_every_steps, c.eval_every_steps = 2, 1, 1000
  c.checkpoint_every_steps = 2
  c.update_from_flattened_dict(overrides)
  return c


def test_preflight_resolves_the_derived_values_and_changes_nothing(tmp_path):
  config = _config(num_train_steps=-1, num_epochs=3, eval_every_steps=-1)
  config.lock()
  before = config.to_json_best_effort()
  plan = run_plan.preflight(config, str(tmp_path / 'run'), num_devices=1, create=False)
  assert config.to_json_best_effort() == before
  assert not (tmp_path / 'run').exists()  # create=False: nothing is written
  # digits: 1,438 training examples, 10 classes; batch 64; image_size 16.
  assert plan.num_classes == 10 and plan.image_shape == (16, 16, 3)
  assert plan.steps_per_epoch == 1438 // 64 == plan.eval_every
  assert plan.total_steps == 3 * plan.steps_per_epoch
  assert plan.initial_temperature == plan.final_temperature == 1.0
  assert plan.num_devices == 1 and plan.latest_checkpoint is None
  assert plan.workdir == str(tmp_path / 'run')
  assert isinstance(plan.config, ml_collections.FrozenConfigDict)
  with pytest.raises((AttributeError, ValueError)):
    plan.config.temperature = 2.0  # frozen
  with pytest.raises(AttributeError):
    plan.total_steps = 3


@pytest.mark.parametrize(
  'schedule, final, milestones',
  [
    ('constant', None, ()),
    ('linear', 0.5, ()),
    ('cosine', 0.3, ()),
    ('step', 0.01, (1, 2)),  # every milestone reached: ends at final_temperature
    ('step', 0.01, (1, 3, 50)),  # the last one is after the budget
    ('step', 0.01, (2, 2)),  # two milestones at one step count once, as in the schedule
  ],
)
def test_the_final_temperature_is_the_schedules_last_value(schedule, final, milestones, tmp_path):
  config = _config(
    num_train_steps=60,
    temperature=100.0,
    temperature_schedule=schedule,
    final_temperature=final,
    temperature_milestones=milestones,
  )
  plan = run_plan.preflight(config, str(tmp_path), num_devices=1, create=False)
  last = float(plan.temperature.fn()(plan.total_steps))
  assert plan.final_temperature == pytest.approx(last, rel=1e-5)
  assert plan.initial_temperature == pytest.approx(float(plan.temperature.fn()(0)))
  if schedule != 'constant' and milestones in ((), (1, 2)):
    assert plan.final_temperature == final  # exactly the config's, as the analysis reports


def test_preflight_refuses_with_the_same_one_line_errors(tmp_path):
  with pytest.raises(ValueError, match='config.temperature=0.0 is invalid'):
    run_plan.preflight(_config(temperature=0.0), str(tmp_path), num_devices=1)
  with pytest.raises(ValueError, match='multiple of the number of devices'):
    run_plan.preflight(_config(batch_size=60), str(tmp_path), num_devices=8)
  assert not any(tmp_path.iterdir())


def test_train_and_evaluate_runs_the_checks_once_for_a_plan(tmp_path, monkeypatch):
  calls = []
  for module, name in (
    (validation, 'validate_config'),
    (workdir_lock, 'check_unlocked'),
    (config_diff, 'check_resumable'),
    (storage, 'check_writable'),
    (storage, 'check_shared_workdir'),
  ):
    real = getattr(module, name)
    monkeypatch.setattr(
      module, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1]
    )
  plan = run_plan.preflight(_config(), str(tmp_path), num_devices=1)
  assert sorted(calls) == sorted(
    [
      'validate_config',
      'check_unlocked',
      'check_resumable',
      'check_writable',
      'check_shared_workdir',
    ]
  )
  calls.clear()
  state, _ = train.train_and_evaluate(plan, devices=jax.devices()[:1])
  assert int(state.step) == 2
  assert calls == []  # the plan's checks are not run again
  with pytest.raises(ValueError, match='checked for 1 devices, but the mesh has 2'):
    train.train_and_evaluate(plan, devices=jax.devices()[:2])


def test_checkpoints_written_after_the_preflight_are_checked_under_the_lock(tmp_path):
  stale = run_plan.preflight(_config(), str(tmp_path), num_devices=1)
  # Another process trains another config there before this one takes the lock.
  train.train_and_evaluate(_config(loss='mse'), str(tmp_path), devices=jax.devices()[:1])
  with pytest.raises(ValueError, match=r"loss \('mse' -> 'ce'\)"):
    train.train_and_evaluate(stale, devices=jax.devices()[:1])


def test_a_saved_runs_plan_and_load_run(tmp_path):
  config = _config(temperature_schedule='linear', temperature=10.0, final_temperature=2.0)
  train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  plan = run_plan.plan_from_run(str(tmp_path))
  assert plan.final_temperature == 2.0 and plan.initial_temperature == 10.0
  assert plan.num_classes == 10 and plan.image_shape == (16, 16, 3)
  assert plan.total_steps == 2 and plan.latest_checkpoint == 2 and plan.num_devices is None
  moved = run_plan.plan_from_run(str(tmp_path), {'data_dir': str(tmp_path / 'elsewhere')})
  assert moved.config.data_dir == str(tmp_path / 'elsewhere')
  with pytest.raises(ValueError, match='temperature cannot be overridden'):
    run_plan.plan_from_run(str(tmp_path), {'temperature': 3.0})
  config, model, variables, step = run_plan.load_run(str(tmp_path))
  assert step == 2 and config.final_temperature == 2.0
  with pytest.raises(AttributeError):
    config.not_a_field = 1  # locked
  assert model.num_classes == 10
  assert set(variables) == {'params'} and variables['params']['head']['kernel'].shape[-1] == 10
