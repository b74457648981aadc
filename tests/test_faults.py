"""Fault injection: signals, corrupt checkpoints, concurrent runs, changed configs.

Each case is a real event a cluster produces; the expected outcome is that no finished
work is lost and the run directory never claims something it does not hold. The same
cases run, printed as a table, in `python -m tools.fault_drill`.
"""
import os
import shutil
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


def digits_config(**overrides):
  """configs/quickstart.py shrunk to a 32-wide 2-layer MLP and a few steps."""
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  c = quickstart.get_config()
  c.model.width, c.model.depth = 32, 2
  c.num_train_steps, c.log_every_steps, c.eval_every_steps = 4, 2, 1000
  c.checkpoint_every_steps = 2
  for key, value in overrides.items():
    target = c
    *path, leaf = key.split('.')
    for p in path:
      target = target[p]
    target[leaf] = value
  return c


def _flip_bytes(path: Path, count: int = 64) -> None:
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  for i in range(middle, min(len(data), middle + count)):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_file(step_dir: Path) -> Path:
  return max((p for p in step_dir.rglob('*') if p.is_file() and 'sha256' not in p.name),
             key=lambda p: p.stat().st_size)


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory) -> Path:
  """A 4-step digits run with checkpoints at steps 2 and 4 (copy it before damaging it)."""
  import jax  # pylint: disable=import-outside-toplevel
  from rankdeficit import train  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp('finished')
  train.train_and_evaluate(digits_config(), str(workdir), devices=jax.devices()[:1])
  return workdir


@pytest.mark.parametrize('damage', ['flipped_bytes', 'truncated', 'garbage_iterator_json'])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path,
                                                                  damage, caplog):
  import jax  # pylint: disable=import-outside-toplevel
  from rankdeficit import integrity, train  # pylint: disable=import-outside-toplevel
  tmp_path = tmp_path / 'run'
  shutil.copytree(finished_run, tmp_path)
  latest = tmp_path / 'checkpoints' / '4'
  assert integrity.verify(str(latest)) is None and integrity.is_sealed(str(latest))
  if damage == 'flipped_bytes':
    _flip_bytes(_largest_file(latest))
  elif damage == 'truncated':
    victim = _largest_file(latest)
    victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 2])
  else:  # unsealed (e.g. killed before sealing): only orbax/grain parsing can tell
    (latest / integrity.MANIFEST).unlink()
    iterator_files = [f for f in (latest / 'data_iter').rglob('*') if f.is_file()]
    assert iterator_files
    for f in iterator_files:
      f.write_text('{not json')
  caplog.set_level('WARNING')
  state, _ = train.train_and_evaluate(digits_config(num_train_steps=6), str(tmp_path),
                                      devices=jax.devices()[:1])
  warnings = [r.getMessage() for r in caplog.records if 'corrupt' in r.getMessage()]
  assert any('step 4' in w for w in warnings), warnings
  assert (tmp_path / 'checkpoints' / 'corrupt' / '4').is_dir()
  assert int(state.step) == 6
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                if p.name.isdigit()) == [2, 4, 6]  # 4 re-trained from 2


def test_second_process_on_a_locked_workdir_exits_before_compiling(tmp_path):
  from rankdeficit import workdir_lock  # pylint: disable=import-outside-toplevel
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    (tmp_path / workdir_lock.LOCK_FILE).write_text(
        f'{{"host": "{os.uname().nodename}", "pid": {holder.pid}, "started": 0, '
        f'"heartbeat": {time.time()}}}')
    out = subprocess.run(digits_command(tmp_path, 4), env=ENV, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
  finally:
    holder.kill()
    holder.wait()
  assert out.returncode != 0
  assert 'locked' in out.stderr and f'pid {holder.pid}' in out.stderr, out.stderr[-1000:]
  assert 'Traceback' not in out.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ['lock']  # nothing else written
  # The holder is dead now: the lock is stale and taken over.
  with workdir_lock.WorkdirLock(tmp_path):
    assert workdir_lock.read_holder(tmp_path)['pid'] == os.getpid()
  assert workdir_lock.read_holder(tmp_path) is None


def test_changed_config_rerun_is_refused_and_config_json_kept(finished_run, tmp_path):
  from rankdeficit import config_diff  # pylint: disable=import-outside-toplevel
  saved = (finished_run / 'config.json').read_text()
  for flag, field in (('--config.temperature=100', 'temperature'),
                      ('--config.loss=mse', 'loss')):
    out = subprocess.run(digits_command(finished_run, 4, '--config.model.width=32') + [flag],
                         env=ENV, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert f'error: workdir {finished_run} holds checkpoints trained with a different ' \
           f'config: {field} (' in out.stderr, out.stderr[-1000:]
    assert (finished_run / 'config.json').read_text() == saved
  # Bookkeeping and a longer budget may change.
  config_diff.check_resumable(digits_config(num_train_steps=8, log_every_steps=1),
                              str(finished_run))
  with pytest.raises(ValueError, match=r'num_train_steps \(4 -> 3\)'):
    config_diff.check_resumable(digits_config(num_train_steps=3), str(finished_run))
  with pytest.raises(ValueError, match=r'num_workers \(0 -> 2\)'):
    config_diff.check_resumable(digits_config(num_workers=2), str(finished_run))


def test_default_workdir_separates_runs_that_differ_in_weights():
  from rankdeficit import main  # pylint: disable=import-outside-toplevel
  base = main.default_workdir(digits_config(), 'configs/quickstart.py')
  assert base.startswith(os.path.join('runs', 'quickstart_T1_seed0_'))
  assert main.default_workdir(digits_config(log_every_steps=7), 'q.py').endswith(
      base.rsplit('_', 1)[1])
  for change in ({'loss': 'mse'}, {'model.init': 'normal'}, {'model.width': 64},
                 {'dataset': 'mnist'}):
    assert main.default_workdir(digits_config(**change), 'configs/quickstart.py') != base
