"""Fault injection: signals, corrupt checkpoints, concurrent runs, changed configs.

Each case is a real event a cluster produces; the expected outcome is that no finished
work is lost and the run directory never claims something it does not hold. The same
cases run, printed as a table, in `python -m tools.fault_drill`.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
       'PYTHONPATH': str(REPO)}


def digits_command(workdir, steps, *extra):
  """`rankdeficit.main` on the in-memory digits with a tiny MLP (no data_dir needed)."""
  return [sys.executable, '-m', 'rankdeficit.main', f'--config={REPO}/configs/quickstart.py',
          f'--workdir={workdir}', '--config.model.width=32', '--config.model.depth=2',
          f'--config.num_train_steps={steps}', '--config.log_every_steps=1',
          '--config.eval_every_steps=1000', '--config.checkpoint_every_steps=1000', *extra]


def _children(pid: int) -> list[int]:
  """Child processes of `pid` (of any of its threads: grain spawns from a thread)."""
  found = []
  for task in Path(f'/proc/{pid}/task').glob('*'):
    try:
      found += [int(p) for p in (task / 'children').read_text().split()]
    except OSError:
      pass
  return found


def _alive(pid: int) -> bool:
  try:
    return Path(f'/proc/{pid}/stat').read_text().split(') ')[1][0] != 'Z'
  except OSError:
    return False


def run_and_signal(cmd, log_path: Path, *, after_step: int, signum=signal.SIGTERM):
  """Starts `cmd` in its own process group, signals the whole group (as SLURM and Ctrl-C
  do) once `after_step` has been logged; returns (returncode, output, worker pids)."""
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
  marker = f'[{after_step}] train/'
  deadline = time.time() + 180
  workers = []
  while time.time() < deadline and proc.poll() is None:
    workers = _children(proc.pid) or workers
    if marker in log_path.read_text():
      break
    time.sleep(0.2)
  workers = _children(proc.pid) or workers
  os.killpg(proc.pid, signum)
  try:
    proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  return proc.returncode, log_path.read_text(), workers


def test_sigterm_with_workers_saves_the_reached_step_and_resumes(tmp_path):
  workdir = tmp_path / 'run'
  cmd = digits_command(workdir, 400, '--config.num_workers=1')
  rc, out, workers = run_and_signal(cmd, tmp_path / 'log.txt', after_step=3)
  assert rc == 128 + signal.SIGTERM, out[-2000:]
  stopped = [line for line in out.splitlines() if 'Stopped at step' in line]
  assert stopped, out[-2000:]
  step = int(stopped[0].split('Stopped at step ')[1].split(':')[0])
  assert 3 <= step < 400
  assert (workdir / 'checkpoints' / str(step)).is_dir()
  assert workers, 'the run started no worker process'
  time.sleep(1)
  assert not [w for w in workers if _alive(w)], 'orphaned grain workers'
  resumed = subprocess.run(digits_command(workdir, step + 2, '--config.num_workers=1'), env=ENV, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'Resumed from checkpoint at step {step}.' in resumed.stderr
  assert (workdir / 'checkpoints' / str(step + 2)).is_dir()
