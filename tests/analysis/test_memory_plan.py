"""The analysis's memory plan (device bytes, layer groups) and the memory model of
`python -m rankdeficit.analyze --plan_only` (no data, no checkpoint)."""

import os
from pathlib import Path
import subprocess
import sys

import jax
import numpy as np

from rankdeficit.analysis import extraction
from rankdeficit.analysis import memory_model
from rankdeficit.analysis import memory_plan
from rankdeficit.analysis.config import AnalysisConfig

REPO = Path(__file__).resolve().parents[2]
PAPER = AnalysisConfig.from_overrides({'max_train_examples': 100_000})  # the paper's protocol


class _Identity:
  def apply(self, variables, images, train=False):
    del variables, train
    flat = images.reshape(images.shape[0], -1)
    return flat[:, :3], {'x': flat}


def test_rows_per_device_is_the_extractions_layout():
  batches = [
    {'image': np.ones((4, 2, 2, 1), np.float32), 'label': np.zeros(4, int), 'mask': m}
    for m in (np.ones(4, bool), np.ones(4, bool), np.arange(4) < 2)
  ]
  f = extraction.extract_features(_Identity(), {}, batches)
  per_device = memory_plan.rows_per_device(
    10, batch_size=4, processes=1, local_devices=jax.local_device_count()
  )
  assert per_device * jax.device_count() == len(f.ids)
  # 8 hosts x 4 chips, ImageNet's 50,000 validation images in global batches of 1,024:
  # 6,250 per host in 49 local batches of 128 = 32 per chip.
  assert memory_plan.rows_per_device(50_000, batch_size=1024, processes=8, local_devices=4) == (
    49 * 32
  )


def test_device_budget():
  gib = 2**30
  budget = memory_plan.device_budget
  assert budget(None, 0.5, device_bytes=16 * gib, local_devices=4) == 8 * gib  # accelerator
  assert budget(None, 0.5, device_bytes=None, local_devices=4) == 6 * gib // 4  # CPU default
  assert budget(2.0, 0.5, device_bytes=16 * gib, local_devices=4) == gib // 2  # explicit cap
  assert budget(0, 0.5, device_bytes=16 * gib, local_devices=4) == 0  # one group
  assert budget(1e-12, 0.5, device_bytes=None, local_devices=8) == 1  # a group per layer


def test_memory_model_of_resnet50_on_imagenet_needs_no_data(tmp_path):
  config = memory_model.load_config('configs/resnet50_in1k.py')
  config.data_dir = str(tmp_path / 'nothing_here')
  pod = memory_model.PodShape(processes=8, local_devices=4, hbm_gib=16)
  lay, table = memory_model.memory_rows(config, PAPER, pod)
  assert lay.rows == {
    'id_test': 50_000,
    'id_train': 100_000,
    'ood_test': 10_000,
    'ood_train': 50_000,
  }
  assert len(lay.kept) == 18 and max(lay.kept.values()) == 10_000 and len(lay.groups) == 1
  rows = {what: (device, host) for what, device, host in table}
  held = sum(lay.device_rows.values())
  features = rows['features, every layer at once'][0]
  assert features == 4 * held * sum(lay.kept.values()) + held * (8 * 1000 + 8)
  gathered = rows['before: every split of every layer gathered on every host'][1]
  assert gathered == 4 * 210_000 * (sum(lay.kept.values()) + 2000)  # ~136 GiB on each host
  peak_device, peak_host = next(v for k, v in rows.items() if k.startswith('peak'))
  assert features < peak_device < 16 * 2**30 and peak_host < gathered / 100
  text = memory_model.format_table(config, PAPER, pod)
  assert '| features, every layer at once | 4.27 GiB | 17.10 GiB | - |' in text


def test_plan_only_cli_prints_the_table():
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  command = [
    sys.executable,
    '-m',
    'rankdeficit.analyze',
    '--plan_only',
    '--plan_config=mlp_c10_cpu',
    '--plan_processes=2',
    '--plan_devices_per_process=4',
    '--plan_hbm_gib=16',
    '--max_examples=1000',
  ]
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '2 process(es) x 4 device(s) = 8' in proc.stdout
  assert '| probes: stacked group, Adam state, a mini-batch; shuffles |' in proc.stdout
