"""tools/benchmark_compile.py measures every phase of the monitor's program."""

from tools import benchmark_compile


def test_measure_reports_every_phase_for_a_tiny_mlp():
  result = benchmark_compile.measure(*benchmark_compile.monitor_program('mlp', 8, width=8, depth=1))
  for key in ('lower_s', 'compile_s', 'first_call_s', 'second_call_s', 'compile_cpu_s'):
    assert result[key] > 0
  assert result['events'].get('/jax/core/compile/backend_compile_duration', 0) > 0
  assert result['hlo_lines'] > 100 and result['custom_calls'] > 0  # LAPACK SVD/eigh
