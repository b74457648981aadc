"""Run metadata, the persistent compilation cache and the profiler hook."""

import sys

from clu import periodic_actions
import jax
import pytest

from configs import base
from rankdeficit.run import runtime
from rankdeficit.run import storage


def test_each_start_appends_its_environment(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, 'argv', ['rankdeficit.main', '--config=configs/quickstart.py'])
  runtime.record_run_info(str(tmp_path))
  runtime.record_run_info(str(tmp_path))  # a resume
  starts = storage.read_json(tmp_path / runtime.RUN_INFO_FILE)
  assert len(starts) == 2
  info = starts[-1]
  assert info['command_line'][1:] == ['rankdeficit.main', '--config=configs/quickstart.py']
  assert info['packages']['jax'] == jax.__version__
  assert info['device_kind'] == jax.devices()[0].device_kind
  assert info['device_count'] == jax.device_count()
  assert info['process_count'] == 1
  assert info['git_commit'] is None or len(info['git_commit'].split('-')[0]) == 40


def test_compilation_cache_dir_is_handed_to_jax(tmp_path):
  previous = jax.config.jax_compilation_cache_dir
  try:
    runtime.enable_compilation_cache(str(tmp_path / 'cache'))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cache')
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)
  runtime.enable_compilation_cache('')  # off: nothing changes
  assert jax.config.jax_compilation_cache_dir == previous


@pytest.mark.parametrize('profile', [False, True])
def test_profile_hook_only_when_asked(profile, tmp_path):
  config = base.get_config()
  config.profile = profile
  hook = runtime.profile_hook(config, str(tmp_path))
  assert isinstance(hook, periodic_actions.Profile) if profile else hook is None
