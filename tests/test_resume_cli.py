"""A target_logits_norm run resumes from the command line and as a resubmitted sweep point,
under the T it chose at step 0 (issue #24 item 1: the frozen run plan)."""

import ast
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

import pytest

from rankdeficit.run import checkpointing
from rankdeficit.training import monitor_log

REPO = Path(__file__).resolve().parents[1]
ENV = {
  **os.environ,
  'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
  'PYTHONPATH': str(REPO),
}


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', *args],
    env=ENV,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    **kwargs,
  )


def _saved_temperature(workdir: Path) -> float:
  return json.loads((workdir / 'config.json').read_text())['temperature']


def test_the_same_command_run_twice_resumes_under_the_chosen_temperature(tmp_path):
  workdir = tmp_path / 'tn'
  cmd = [
    'rankdeficit.main',
    f'--config={REPO}/configs/quickstart.py',
    '--config.num_train_steps=5',
    '--config.target_logits_norm=0.1',
    f'--workdir={workdir}',
  ]
  first = _run(cmd)
  assert first.returncode == 0, first.stderr[-3000:]
  chosen = _saved_temperature(workdir)
  assert chosen != 1.0  # T = n0 / 0.1, not the command's temperature
  second = _run(cmd)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resumed from checkpoint at step 5.' in second.stderr
  assert _saved_temperature(workdir) == chosen
  printed = [ast.literal_eval(out.stdout.strip().splitlines()[-1]) for out in (first, second)]
  assert printed[0]['init/temperature'] == printed[1]['init/temperature']
  assert printed[0]['eval/accuracy'] == printed[1]['eval/accuracy']


def _sweep_file(path: Path) -> Path:
  path.write_text(
    'def get_sweep():\n'
    '  return {\n'
    "    'config': 'configs/quickstart.py',\n"
    "    'points': [{'num_train_steps': 5, 'target_logits_norm': 0.1,\n"
    "                'checkpoint_every_steps': 4, 'log_every_steps': 1}],\n"
    '  }\n'
  )
  return path


def _as_killed_after_step_4(workdir: Path) -> None:
  """The point's workdir as a job killed (without notice) after its checkpoint at step 4."""
  shutil.rmtree(workdir / 'checkpoints' / '5')
  (workdir / 'train_results.json').unlink(missing_ok=True)
  job_time = json.loads((workdir / 'sweep_job.json').read_text())['time']
  status = {'state': 'running', 'time': job_time + 1}
  (workdir / 'sweep_status.json').write_text(json.dumps(status))
  (workdir / 'sweep_heartbeat').write_text(str(time.time() - 3600))


def test_a_resubmitted_sweep_point_resumes_under_the_chosen_temperature(tmp_path):
  sweep_file = _sweep_file(tmp_path / 'tn_sweep.py')
  cmd = ['rankdeficit.sweep', f'--sweep={sweep_file}', '--executor=local', f'--root={tmp_path}']
  first = _run(cmd)
  assert first.returncode == 0, first.stderr[-3000:]
  [workdir] = [p for p in (tmp_path / 'tn_sweep').iterdir() if p.name != 'submitit']
  chosen = _saved_temperature(workdir)
  assert chosen != 1.0
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == [
    '4',
    '5',
  ]
  _as_killed_after_step_4(workdir)
  status = _run([*cmd, '--status'])
  assert 'killed' in status.stdout, status.stdout
  events = set(workdir.glob('events.out.tfevents.*'))
  again = _run(cmd)
  assert again.returncode == 0, again.stderr[-3000:]
  assert '1 job(s) submitted' in again.stdout, again.stdout
  assert (workdir / 'checkpoints' / '5').is_dir()
  assert _saved_temperature(workdir) == chosen
  # The job's own event file: it trained step 5 only (resumed after step 4), at the chosen T.
  (tmp_path / 'job_events').mkdir()
  for path in set(workdir.glob('events.out.tfevents.*')) - events:
    shutil.copy(path, tmp_path / 'job_events')
  logged = monitor_log.read_event_scalars(tmp_path / 'job_events', 'train/')
  steps, temperatures = logged['train/temperature']
  assert list(steps) == [5] and temperatures[0] == pytest.approx(chosen, rel=1e-6)
  assert checkpointing.stored_config(str(workdir))['temperature'] == chosen  # step 5's
