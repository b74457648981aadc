"""tools/benchmark_input.py --augment=imagenet on a few small real JPEGs: every path runs and
the report prints the ratios, the transfer sizes and the worker rule (no timing asserted)."""

import re

from tools import benchmark_input


def test_imagenet_report_has_ratios_transfers_and_workers(local_data_dir, capsys):
  # The session's real CIFAR-10 JPEGs (writing a 'jpeg_bench' set costs a TensorFlow start).
  benchmark_input.main(
    [
      '--augment=imagenet',
      f'--jpeg_dir={local_data_dir}',
      '--jpeg_dataset=cifar10_jpeg',
      '--jpeg_count=6',
      '--image_size=32',
      '--repeats=1',
      '--target_rate=1000',
    ]
  )
  out = capsys.readouterr().out
  for path in (
    'old: tfds decode, float32',
    'uint8: encoded, uint8 crops',
    'windows: 64x64 crop windows',
  ):
    assert path in out
  rates = [float(r.replace(',', '')) for r in re.findall(r'([\d,]+) images per CPU-second', out)]
  assert len(rates) == 4 and min(rates) > 0
  ratio = float(re.search(r'windows / old = ([\d.]+)x', out).group(1))
  assert abs(ratio - rates[3] / rates[0]) < 0.01 * ratio + 0.01
  assert re.search(r'windows / issue baseline \(170/s\) = [\d.]+x', out)
  assert '12.3 KB float32, 3.1 KB uint8 crops, 12.3 KB windows' in out  # 32 x 32 x 3 pixels
  assert 'resized on the host (larger than the canvas): 0 of 6' in out  # 32x32 JPEGs fit
  workers = int(re.search(r'num_workers >= (\d+) = ceil', out).group(1))
  assert 0 <= workers - 1000 / rates[3] < 1.01  # ceil(target / windows per-core rate)
