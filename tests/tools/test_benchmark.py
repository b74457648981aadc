"""tools/benchmark.py: torch_ref.py modes, medians, best mode, load warning (no torch needed)."""

import argparse
import textwrap

from tools import benchmark

# Stands in for torch_ref.py: ms/step depends on the mode, and 'compile_bf16' fails.
_STUB = textwrap.dedent("""\
    import sys
    name, batch, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode == 'compile_bf16':
        sys.exit('no bf16 here')
    ms = {'eager': 40.0, 'compile': 20.0}[mode]
    print(f"{name} batch={batch} device=cpu mode={mode} img/s={batch / ms * 1e3:.1f} "
          f"ms/step={ms}")
""")


def test_torch_medians_per_mode_and_best(tmp_path):
  stub = tmp_path / 'torch_ref.py'
  stub.write_text(_STUB)
  args = argparse.Namespace(torch_ref=str(stub), batch=64, steps=2, repeats=3)
  times = benchmark.torch_medians(args, 'resnet20', ['eager', 'compile', 'compile_bf16'])
  assert abs(times['eager'] - 0.040) < 1e-6 and abs(times['compile'] - 0.020) < 1e-6
  assert times['compile_bf16'] is None
  assert benchmark._best(times) == ('compile', times['compile'])  # pylint: disable=protected-access
  assert benchmark._best({'eager': None}) == (None, None)  # pylint: disable=protected-access


def test_report_load_warns_only_when_busy(monkeypatch, capsys):
  monkeypatch.setattr(benchmark.os, 'getloadavg', lambda: (3.2, 0.0, 0.0))
  assert benchmark.report_load() == 3.2
  assert 'WARNING' in capsys.readouterr().out
  monkeypatch.setattr(benchmark.os, 'getloadavg', lambda: (0.1, 0.0, 0.0))
  benchmark.report_load()
  assert 'WARNING' not in capsys.readouterr().out


def test_flops_of_the_mlp_step_and_the_mfu_line():
  bench = benchmark.JaxStep('mlp', batch=8, warmup=1)
  flops = bench.flops()
  # Forward 2 * 8 * (3072*2048 + 7*2048^2 + 2048*10) multiply-adds, backward ~2x that.
  forward = 2 * 8 * (3072 * 2048 + 7 * 2048**2 + 2048 * 10)
  assert 2.5 * forward < flops < 4 * forward
  line = benchmark.mfu_line(flops, seconds=flops / 2e12, peak_tflops=10.0)
  assert '2.00 TFLOP/s' in line and 'MFU 20.0% of 10 TFLOP/s' in line
  assert 'no FLOP count' in benchmark.mfu_line(None, 1.0, 10.0)
