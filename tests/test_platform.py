"""rankdeficit.platform: XLA flag defaults never override the user's flags."""
from rankdeficit import platform


def test_set_xla_flags_keeps_user_values():
  env = {'XLA_FLAGS': '--xla_cpu_use_xnnpack=false --xla_dump_to=/tmp/x'}
  added = platform.set_xla_flags({'xla_cpu_use_xnnpack': 'true', 'xla_cpu_ftz': 'false'}, env)
  assert added == ['--xla_cpu_ftz=false']
  assert env['XLA_FLAGS'] == '--xla_cpu_use_xnnpack=false --xla_dump_to=/tmp/x --xla_cpu_ftz=false'


def test_set_xla_flags_empty_env_and_noop():
  env = {}
  assert platform.set_xla_flags({}, env) == [] and env == {}
  assert platform.set_xla_flags({'xla_cpu_ftz': 'false'}, env) == ['--xla_cpu_ftz=false']
  assert env['XLA_FLAGS'] == '--xla_cpu_ftz=false'


def test_configure_cpu_defaults_skips_non_cpu_platforms(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert platform.configure_cpu_defaults({'xla_cpu_ftz': 'false'}) == []


def test_configure_cpu_defaults_too_late_is_a_noop(monkeypatch):
  import jax.numpy as jnp
  jnp.ones(1).block_until_ready()  # initialises the backend
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert platform.configure_cpu_defaults({'xla_cpu_ftz': 'false'}) == []
