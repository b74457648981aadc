"""Multi-process runs for real: 2 CPU processes x 4 devices against 1 process x 8 devices.

Each process is a separate `python -m rankdeficit.main` / `rankdeficit.analyze` with its
own `--xla_force_host_platform_device_count=4`, joined by `--coordinator_address` on a free
local port (gloo collectives), exactly like the two-shell README example. The 1 x 8
reference runs in the test process when pytest has 8 devices (the README's XLA_FLAGS), else
in a subprocess with its own XLA_FLAGS, so the tests pass however pytest is invoked; both
sides are read the same way: unrounded numbers from the runs' log0.txt / analysis.json, never the
rounded
dict `rankdeficit.main` prints.
"""

import ast
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest

from configs import quickstart
from rankdeficit import analyze as analyze_lib
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.plan import run_plan
from rankdeficit.run import checkpointing
from rankdeficit.run import distributed
from rankdeficit.run import storage
from rankdeficit.training import train

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300

# A ResNet-20 (BatchNorm: its statistics are a mean over the global batch, across both
# processes) on the in-memory 8x8 digits: the cheapest BatchNorm model of the zoo. At the
# quickstart's lr 0.05 these 4 steps are chaotic (initial logits norm 25): with jax 0.10.2,
# float32 reduction-order noise (~1e-7) grew to parameter differences of 2e-2 and 5 flipped
# test predictions; at lr 0.005 the two runs stay within 4e-7.
OVERRIDES = {
  'model.name': 'resnet20',
  'image_size': 8,
  'learning_rate': 0.005,
  'batch_size': 32,
  'eval_batch_size': 120,
  'metrics_batch_size': 120,
  'num_train_steps': 4,
  'checkpoint_every_steps': 2,
  'log_every_steps': 2,
  'eval_every_steps': 1000,
}
TRAIN_FLAGS = ['--config=configs/quickstart.py'] + [
  f'--config.{k}={v}' for k, v in OVERRIDES.items()
]
ANALYSIS = dict(ood_dataset='', max_dims=64, probe_epochs=2, probe_batch_size=256)
ANALYZE_FLAGS = [f'--{k}={v}' for k, v in ANALYSIS.items()]

# Dies (SIGKILL, no cleanup) right after checkpoint KILL_AFTER_STEP is committed on every
# process, i.e. a preemption at the worst moment for a resume.
_KILLED_MAIN = """
import os, signal, sys
from absl import app
from rankdeficit.run import checkpointing
from rankdeficit.run import distributed
from rankdeficit import main
save = checkpointing.Checkpointer.save
def save_then_die(self, step, *args, **kwargs):
  save(self, step, *args, **kwargs)
  if step == int(os.environ['KILL_AFTER_STEP']):
    self.wait_until_finished()
    distributed.barrier('about_to_die')
    os.kill(os.getpid(), signal.SIGKILL)
checkpointing.Checkpointer.save = save_then_die
sys.argv[0] = 'rankdeficit.main'
app.run(main.main)
"""


def _launch(command: list[str], num_processes: int, devices: int, env_extra=None):
  """Starts `num_processes` copies of `command` joined into one JAX job; returns results."""
  env = dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    PYTHONPATH=str(REPO),
    JAX_PLATFORMS='cpu',
    **(env_extra or {}),
  )
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(num_processes):
    dist = (
      [
        f'--coordinator_address=127.0.0.1:{port}',
        f'--num_processes={num_processes}',
        f'--process_id={i}',
      ]
      if num_processes > 1
      else []
    )
    procs.append(
      subprocess.Popen(
        [sys.executable] + command + dist,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    results.append((p.returncode, out, err))
  return results


def _one_process(module: str, flags: list[str], workdir) -> tuple[dict, str] | None:
  """The 1-process x 8-device reference (run or analysis): in this process when pytest has
  8 devices (the README's XLA_FLAGS; saves two JAX start-ups), else a subprocess with its
  own XLA_FLAGS. A run returns its final eval metrics, unrounded, and its 'Initial logits
  norm' as logged ('%.4g'); an analysis writes analysis.json."""
  if jax.device_count() != 8:
    [(rc, _, err)] = _launch(['-m', module] + flags + [f'--workdir={workdir}'], 1, 8)
    assert rc == 0, err[-3000:]
    if module == 'rankdeficit.main':
      return _logged_eval(workdir), _logged_init_norm(workdir)
  elif module == 'rankdeficit.main':
    config = quickstart.get_config()
    config.update_from_flattened_dict(OVERRIDES)
    _, results = train.train_and_evaluate(config, str(workdir))
    return results, [f'{results["init/logits_norm"]:.4g}']
  else:
    analyze_lib.analyze_run(
      str(workdir), AnalysisConfig.from_overrides(dict(ANALYSIS, plots=False))
    )
  return None


def _printed_results(stdout: str) -> dict:
  """The results dict `rankdeficit.main` prints as its last line (rounded to 4 decimals:
  compare it only with another printed dict)."""
  return ast.literal_eval(stdout.strip().splitlines()[-1])


def _logged_eval(workdir) -> dict:
  """The last evaluation, unrounded, from process 0's log ('step N: {json}')."""
  lines = [l for l in (workdir / 'log0.txt').read_text().splitlines() if ': {"eval/' in l]
  return json.loads(lines[-1].split(': ', 1)[1])


def _logged_init_norm(workdir) -> list[str]:
  """The 'Initial logits norm' values process 0 logged (formatted '%.4g')."""
  return [
    l.split(': ')[-1]
    for l in (workdir / 'log0.txt').read_text().splitlines()
    if 'Initial logits norm' in l
  ]


def _params(workdir) -> dict:
  _, _, variables, step = run_plan.load_run(str(workdir))
  assert step == 4
  return {
    '/'.join(str(k.key) for k in path): np.asarray(leaf, np.float64)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
  }


def _numbers(tree, prefix=''):
  """Flattens the numeric leaves of an analysis.json."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_numbers(v, f'{prefix}{k}/'))
    return out
  if isinstance(tree, (int, float)) and not isinstance(tree, bool):
    return {prefix.rstrip('/'): float(tree)}
  return {}


def test_explicit_flags_must_come_together():
  with pytest.raises(ValueError, match='go together'):
    distributed.initialize('127.0.0.1:1234', 2, None)
  with pytest.raises(ValueError, match='process_id=2'):
    distributed.initialize('127.0.0.1:1234', 2, 2)
  assert distributed.initialize() is False  # nothing asked: stays single-process


def test_two_processes_match_one_process_through_a_kill_and_resume(tmp_path):
  ref, multi = tmp_path / 'one_process', tmp_path / 'two_processes'
  main = ['-m', 'rankdeficit.main']
  flags = TRAIN_FLAGS + [f'--config.compilation_cache_dir={tmp_path / "xla_cache"}']
  expected, expected_init_norm = _one_process('rankdeficit.main', TRAIN_FLAGS, ref)

  killed = _launch(
    ['-c', _KILLED_MAIN] + flags + [f'--workdir={multi}'], 2, 4, {'KILL_AFTER_STEP': '2'}
  )
  assert [rc for rc, _, _ in killed] == [-9, -9], killed[0][2][-3000:]
  assert checkpointing.Checkpointer(str(multi)).latest_step == 2
  # same first eval batch: the same '%.4g' line in both logs
  assert _logged_init_norm(multi) == expected_init_norm != []
  resumed = _launch(main + flags + [f'--workdir={multi}'], 2, 4)  # compiled: cached
  assert [rc for rc, _, _ in resumed] == [0, 0], resumed[0][2][-3000:]
  assert 'Resumed from checkpoint at step 2' in resumed[1][2]
  assert _printed_results(resumed[1][1]) == _printed_results(resumed[0][1])  # same on both
  got = _logged_eval(multi)

  # Same global batches (records, order, augmentation) and global BatchNorm statistics:
  # only float summation order differs (gloo all-reduce vs the in-process one). Both
  # sides are unrounded logged values. The count, the rank and the number of correct
  # predictions are integers: exact (one flipped prediction would be a real difference);
  # loss and logits norm are float sums: rtol 1e-4, far above the ~1e-7 reordering noise.
  n = got['eval/num_examples']
  assert n == expected['eval/num_examples']
  assert got['eval/solution_rank'] == expected['eval/solution_rank']
  assert round(got['eval/accuracy'] * n) == round(expected['eval/accuracy'] * n)
  for key in ('eval/loss', 'eval/logits_norm'):
    print(f'{key}: 1 process {expected[key]!r}, 2 processes {got[key]!r}')
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, err_msg=key)
  want, have = _params(ref), _params(multi)
  assert want.keys() == have.keys()
  print('params: max |diff|', max(np.max(np.abs(have[n] - want[n])) for n in want))
  for name in want:
    np.testing.assert_allclose(have[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
  # Only process 0 records a start (first launch and resume); both saw 2 x 4 devices.
  starts = storage.read_json(multi / 'run_info.json')
  assert [(s['process_count'], s['device_count']) for s in starts] == [(2, 8), (2, 8)]

  # Analysis: each process extracts half of every split; the gathered result equals the
  # one-process (x 8 devices, a subprocess as well) analysis of the same run.
  shutil.copytree(ref, multi / 'copy')
  analyze = ['-m', 'rankdeficit.analyze'] + ANALYZE_FLAGS
  two = _launch(analyze + [f'--workdir={multi / "copy"}'], 2, 4)
  assert [rc for rc, _, _ in two] == [0, 0], two[0][2][-3000:]
  assert 'Wrote' in two[0][1] and 'Wrote' not in two[1][1]  # process 0 reports and writes
  _one_process('rankdeficit.analyze', ANALYZE_FLAGS, ref)
  a1 = _numbers(storage.read_json(ref / 'analysis' / 'analysis.json'))
  a2 = _numbers(storage.read_json(multi / 'copy' / 'analysis' / 'analysis.json'))
  a1 = {k: v for k, v in a1.items() if not k.startswith('timings_s/')}
  assert a1.keys() <= a2.keys()
  assert a2['num_examples/id_test'] == a1['num_examples/id_test'] == 359  # the full split
  print('analysis: max |diff|', max(abs(a2[k] - a1[k]) for k in a1))
  for key in a1:
    np.testing.assert_allclose(a2[key], a1[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_processes_with_different_workdirs_are_refused(tmp_path):
  results = []
  port = portpicker.pick_unused_port()
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=1',
    PYTHONPATH=str(REPO),
    JAX_PLATFORMS='cpu',
  )
  procs = [
    subprocess.Popen(
      [sys.executable, '-m', 'rankdeficit.main']
      + TRAIN_FLAGS
      + [
        f'--workdir={tmp_path / f"host{i}"}',
        f'--coordinator_address=127.0.0.1:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=TIMEOUT_S)
    results.append((p.returncode, err))
  for rc, err in results:
    assert rc != 0
    assert 'is not the same directory on every process: process(es) [1]' in err, err[-2000:]
  assert not (tmp_path / 'host0' / 'checkpoints').exists()


@pytest.mark.parametrize('num_processes', [2, 3])
def test_first_eval_batch_is_the_same_global_batch_for_any_process_count(num_processes):
  """The collapse monitor's fixed batch and init/logits_norm's batch (`num_examples` =
  the batch size) are the same examples, in the same order, for 1 or P processes."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  config = quickstart.get_config()
  kwargs = dict(batch_size=120, num_examples=120, shuffle_seed=None)
  [want] = list(
    input_pipeline._eval_iterator(  # pylint: disable=protected-access
      config, 'digits', 'test', process_index=0, process_count=1, **kwargs
    )
  )
  parts = [
    list(
      input_pipeline._eval_iterator(  # pylint: disable=protected-access
        config, 'digits', 'test', process_index=p, process_count=num_processes, **kwargs
      )
    )
    for p in range(num_processes)
  ]
  assert all(len(batches) == 1 for batches in parts)  # one batch per process
  for key in ('image', 'label', 'mask'):
    np.testing.assert_array_equal(np.concatenate([b[0][key] for b in parts]), want[key])
