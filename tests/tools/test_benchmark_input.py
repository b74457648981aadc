"""tools/benchmark_input.py --augment=imagenet on a few small real JPEGs: every path runs and
the report prints the ratios, the transfer sizes and the worker rule (no timing asserted)."""
import re

from tools import benchmark_input


def test_imagenet_report_has_old_new_ratios_and_workers(local_data_dir, capsys):
  # The session's real CIFAR-10 JPEGs (writing a 'jpeg_bench' set costs a TensorFlow start).
  benchmark_input.main(['--augment=imagenet', f'--jpeg_dir={local_data_dir}',
                        '--jpeg_dataset=cifar10_jpeg', '--jpeg_count=6', '--image_size=32',
                        '--repeats=1', '--target_rate=1000'])
  out = capsys.readouterr().out
  assert 'old: tfds decode, float32' in out and 'new: encoded, uint8' in out
  rates = [float(r.replace(',', '')) for r in re.findall(r'([\d,]+) images per CPU-second', out)]
  assert len(rates) == 3 and min(rates) > 0
  ratio = float(re.search(r'new / old = ([\d.]+)x', out).group(1))
  assert abs(ratio - rates[2] / rates[0]) < 0.01 * ratio + 0.01
  assert re.search(r'new / issue baseline \(170/s\) = [\d.]+x', out)
  assert '12.3 KB float32 -> 3.1 KB uint8' in out  # 32 x 32 x 3 pixels
  workers = int(re.search(r'num_workers >= (\d+) = ceil', out).group(1))
  assert 0 <= workers - 1000 / rates[2] < 1.01  # ceil(target / new per-core rate)
