"""One process x 8 devices and 2 processes x 4 devices give the same analysis.json.

A tiny MLP trained on the in-memory digits (OOD: digits too, so every metric runs without a
data_dir) is analysed once in this process (8 CPU devices; a subprocess when pytest has
fewer) and once by two `python -m rankdeficit.analyze` processes of 4 devices each, joined
by --coordinator_address (gloo), launched by the harness of tests/run/test_distributed.py.
The two lay the rows out differently (the padding of each process's last eval batch sits in
the middle of the 2-process arrays), so only float32 summation orders differ. Every number
of analysis.json is compared under the tolerance `TOLERANCES` names for its field; a new
field without one fails the test. Each process's log also states the feature bytes it
holds: the 2 processes hold half each.
"""

import importlib.util
import logging
from pathlib import Path
import re
import shutil
import threading

import jax
import numpy as np
import pytest

from configs import quickstart
from rankdeficit import analyze as analyze_lib
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import storage
from rankdeficit.training import train

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = {
  'model.width': 32,
  'model.depth': 3,
  'image_size': 8,
  'ood_dataset': 'digits',
  'batch_size': 32,
  'eval_batch_size': 96,  # 1 x 8: 12 rows per device per batch; 2 x 4: 12 as well
  'num_train_steps': 20,
  'num_epochs': 0,
  'checkpoint_every_steps': 20,
  'log_every_steps': 20,
  'eval_every_steps': 1000,
}
ANALYSIS = dict(max_dims=16, probe_epochs=2, probe_batch_size=100, plots=False)
N_TEST = 359  # digits test split

# Tolerance per analysis.json field (regex on the flattened key; first match wins).
# Integers (ranks, counts, bounds, sizes) and the network's own test accuracy are exact:
# they come from sums of integers or from TSQR singular values far from the threshold.
ONE_TEST_EXAMPLE = dict(rtol=0, atol=1.01 / N_TEST)
TOLERANCES = [
  # A probe's weights differ by float32 reordering (~1e-5 relative after Adam), so at most
  # one borderline test prediction may flip.
  (r'^(id|ood)_probe_accuracy/', ONE_TEST_EXAMPLE),
  # kappa / rho are functions of those accuracies; exact unless an accuracy flipped.
  (r'^(kappa|rho)', 'derived'),
  (r'^representation_effective_rank/', dict(rtol=1e-5, atol=0)),
  (r'^logits_norm_', dict(rtol=1e-6, atol=0)),
  (r'^orthodev', dict(rtol=1e-5, atol=1e-7)),
  (r'^neural_collapse/nc4$', dict(rtol=0, atol=0)),  # a count of rows
  (r'^neural_collapse/', dict(rtol=1e-4, atol=1e-6)),  # ratios of streamed sums
  # NECO scores (PCA of a streamed covariance) agree to ~1e-6: a tie may break otherwise.
  (r'^ood_detection/(auroc|aupr_in|aupr_out|fpr95_)', ONE_TEST_EXAMPLE),
  (r'', dict(rtol=0, atol=0)),
]


def _harness():
  """tests/run/test_distributed.py: `_launch` (N processes of a command joined into one
  JAX job) and `_numbers` (the flattened numbers of an analysis.json)."""
  path = REPO / 'tests' / 'run' / 'test_distributed.py'
  spec = importlib.util.spec_from_file_location('distributed_harness', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _tolerance(key: str):
  return next(tol for pattern, tol in TOLERANCES if re.search(pattern, key))


def _held_bytes(log: str) -> int:
  found = re.findall(r'holds (\d+) bytes .* of features', log)
  assert found, log[-2000:]
  return max(int(b) for b in found)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  config = quickstart.get_config()
  config.update_from_flattened_dict(OVERRIDES)
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  return workdir


FLAGS = [f'--{k}={v}' for k, v in ANALYSIS.items() if k != 'plots'] + [
  '--noplots',
  '--logtostderr',
  '--verbosity=0',
]


def _analyse_one_process(workdir: Path, harness, caplog) -> int:
  """The 1 x 8 reference: in this process when pytest has 8 devices (the README's
  XLA_FLAGS), else a subprocess. Returns the feature bytes it logged holding."""
  if jax.device_count() == 8:
    with caplog.at_level(logging.INFO):
      analyze_lib.analyze_run(str(workdir), AnalysisConfig.from_overrides(ANALYSIS))
    return _held_bytes(caplog.text)
  [(rc, _, err)] = harness._launch(
    ['-m', 'rankdeficit.analyze', f'--workdir={workdir}'] + FLAGS, 1, 8
  )
  assert rc == 0, err[-3000:]
  return _held_bytes(err)


def test_two_processes_write_the_same_analysis_as_one(tiny_run, tmp_path, caplog):
  harness = _harness()
  one, two = tmp_path / 'one', tmp_path / 'two'
  shutil.copytree(tiny_run, one)
  shutil.copytree(tiny_run, two)
  # The two processes run while this one analyses its copy (JAX compiles mostly on one core).
  results = []
  command = ['-m', 'rankdeficit.analyze', f'--workdir={two}'] + FLAGS
  launch = threading.Thread(target=lambda: results.extend(harness._launch(command, 2, 4)))
  launch.start()
  try:
    held_one = _analyse_one_process(one, harness, caplog)
  finally:
    launch.join()
  assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:]
  a1 = harness._numbers(storage.read_json(one / 'analysis' / 'analysis.json'))
  a2 = harness._numbers(storage.read_json(two / 'analysis' / 'analysis.json'))
  a1 = {k: v for k, v in a1.items() if not k.startswith('timings_s/')}
  a2 = {k: v for k, v in a2.items() if not k.startswith('timings_s/')}
  assert a1.keys() == a2.keys()
  assert a1['num_examples/id_test'] == N_TEST and a1['num_examples/ood_train'] > 1000
  for key in sorted(a1):
    tol = _tolerance(key)
    if tol == 'derived':
      continue
    np.testing.assert_allclose(a2[key], a1[key], err_msg=key, **tol)
  accuracies = [k for k in a1 if 'probe_accuracy/' in k]
  if all(a1[k] == a2[k] for k in accuracies):
    assert all(a1[k] == a2[k] for k in a1 if re.match(r'^(kappa|rho)', k))
  held = [_held_bytes(err) for _, _, err in results]
  print(f'feature bytes held: 1 process {held_one}, 2 processes {held}')
  assert held[0] > 0 and held[0] == held[1] == held_one // 2  # each process its half
