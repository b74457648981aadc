"""tools/bench_input_on_device.py on the session's small real CIFAR-10: every path trains
and the table has a rate and a ratio per path (no timing asserted)."""

import re

from tools import bench_input_on_device


def test_every_path_reports_a_rate_and_a_ratio(local_data_dir, capsys):
  bench_input_on_device.main(
    [
      f'--data_dir={local_data_dir}',
      '--steps=2',
      '--repeats=1',
      '--augment=cifar',
      '--steps_per_dispatch=2',
      '--width=32',
      '--train_subset=512',
    ]
  )
  out = capsys.readouterr().out
  assert 'augment=cifar: 2 steps of batch 128' in out
  rows = re.findall(r'\| (grain|device x1|device x2) \| ([\d,]+) \| [\d.]+ \| ([\d.]+)x \|', out)
  assert [r[0] for r in rows] == ['grain', 'device x1', 'device x2']
  assert all(float(rate.replace(',', '')) > 0 for _, rate, _ in rows)
  assert rows[0][2] == '1.00'
