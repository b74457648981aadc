"""Run metadata, the XLA CPU flags, the persistent compilation cache and the profiler hook."""

import os
import subprocess
import sys

from clu import periodic_actions
import jax
import numpy as np
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
  assert info['xla_flags'] == os.environ.get('XLA_FLAGS', '')
  assert info['git_commit'] is None or len(info['git_commit'].split('-')[0]) == 40


def test_xla_cpu_flags_are_added_once_and_never_over_the_users():
  flag = next(iter(runtime.XLA_CPU_FLAGS))
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  if not jax.lib.__version__.startswith(runtime.XLA_CPU_FLAGS_JAXLIB):
    assert runtime.set_xla_cpu_flags(env) == '--xla_force_host_platform_device_count=8'
    return
  added = runtime.set_xla_cpu_flags(env)
  assert added.split() == [
    '--xla_force_host_platform_device_count=8',
    f'--{flag}={runtime.XLA_CPU_FLAGS[flag]}',
  ]
  assert env['XLA_FLAGS'] == added
  assert runtime.set_xla_cpu_flags(env) == added  # idempotent
  users = {'XLA_FLAGS': f'--{flag}='}  # the user's own value (here: no YNNPACK) stays
  assert runtime.set_xla_cpu_flags(users) == f'--{flag}='
  empty = {}
  assert runtime.set_xla_cpu_flags(empty) == f'--{flag}={runtime.XLA_CPU_FLAGS[flag]}'


_CONV_AND_DOT = """
import jax, jax.numpy as jnp, numpy as np
x = jax.random.normal(jax.random.key(0), (8, 16, 16, 8))
w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16))
def f(x, w):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.sum(jnp.tanh(y.reshape(8, -1) @ y.reshape(8, -1).T))
v, g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, w)
np.save('{out}', np.concatenate([np.ravel(v), np.ravel(g[0]), np.ravel(g[1])]))
"""


def test_xla_cpu_flags_are_accepted_and_keep_the_numerics(tmp_path):
  """A conv + dot program and its gradients under the project's flags match XLA's defaults
  up to summation order, and XLA starts with them (an unknown flag would abort it)."""
  results = {}
  for name, flags in (('default', ''), ('project', runtime.set_xla_cpu_flags({}))):
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env.update(XLA_FLAGS=flags, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR='')
    out = tmp_path / f'{name}.npy'
    subprocess.run(
      [sys.executable, '-c', _CONV_AND_DOT.format(out=out)], env=env, check=True, timeout=120
    )
    results[name] = np.load(out)
  np.testing.assert_allclose(results['project'], results['default'], rtol=2e-5, atol=1e-4)


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
