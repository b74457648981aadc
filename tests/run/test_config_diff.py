"""Run names and resume checks across config fields added after runs were saved."""

from configs import base
from rankdeficit.run import config_diff


def _saved_before(*fields: str) -> dict:
  """The flat config a run saved before `fields` existed."""
  values = config_diff.config_values(base.get_config())
  return {k: v for k, v in values.items() if k not in fields}


def test_run_names_of_earlier_runs_are_kept():
  """input_on_device=False (the only earlier data path) and steps_per_dispatch leave the
  name unchanged; the device data stream gets a name of its own."""
  plain = config_diff.run_name(base.get_config(), 'base')
  dispatched = base.get_config()
  dispatched.steps_per_dispatch = 7
  on_device = base.get_config()
  on_device.input_on_device = True
  assert config_diff.run_name(dispatched, 'base') == plain
  assert config_diff.run_name(on_device, 'base') != plain
  names = {config_diff.run_name(base.get_config(), 'base') for _ in range(2)}
  assert names == {plain}


def test_a_run_saved_before_input_on_device_resumes_only_on_the_host_stream():
  saved = _saved_before('input_on_device', 'steps_per_dispatch')
  assert config_diff.differences(saved, base.get_config()) == []
  on_device = base.get_config()
  on_device.input_on_device = True
  assert config_diff.differences(saved, on_device) == ['input_on_device (False -> True)']
  dispatched = base.get_config()
  dispatched.steps_per_dispatch = 4
  assert config_diff.differences(saved, dispatched) == []
