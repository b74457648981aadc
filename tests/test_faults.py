"""Fault injection: signals, corrupt checkpoints, concurrent runs, changed configs.

Each case is a real event a cluster produces; the expected outcome is that no finished
work is lost and the run directory never claims something it does not hold. The same
cases run, printed as a table, in `python -m tools.fault_drill`.
"""

import errno
import json
import logging
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tools import fault_drill

REPO = Path(__file__).resolve().parents[1]
ENV = {
  **os.environ,
  'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
  'PYTHONPATH': str(REPO),
}


def digits_command(workdir, steps, *extra):
  """`rankdeficit.main` on the in-memory digits with a tiny MLP (no data_dir needed)."""
  return [
    sys.executable,
    '-m',
    'rankdeficit.main',
    f'--config={REPO}/configs/quickstart.py',
    f'--workdir={workdir}',
    '--config.model.width=32',
    '--config.model.depth=2',
    f'--config.num_train_steps={steps}',
    '--config.log_every_steps=1',
    '--config.eval_every_steps=1000',
    '--config.checkpoint_every_steps=1000',
    *extra,
  ]


def run_and_signal(cmd, log_path: Path, *, after_step: int, signum=signal.SIGTERM):
  """Starts `cmd` in its own process group, signals the whole group (as SLURM and Ctrl-C
  do) once `after_step` has been logged; returns (returncode, output, worker pids)."""
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(
      cmd, env=ENV, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
  marker = f'[{after_step}] train/'
  deadline = time.time() + 180
  workers = []
  while time.time() < deadline and proc.poll() is None:
    workers = sorted(fault_drill.descendants(proc.pid)) or workers
    if marker in log_path.read_text():
      break
    time.sleep(0.2)
  workers = sorted(fault_drill.descendants(proc.pid)) or workers
  os.killpg(proc.pid, signum)
  try:
    proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  return proc.returncode, log_path.read_text(), workers


def test_sigterm_with_workers_saves_the_reached_step_and_resumes(tmp_path):
  workdir = tmp_path / 'run'
  cmd = digits_command(workdir, 200, '--config.num_workers=1')
  rc, out, workers = run_and_signal(cmd, tmp_path / 'log.txt', after_step=3)
  assert rc == 128 + signal.SIGTERM, out[-2000:]
  stopped = [line for line in out.splitlines() if 'Stopped at step' in line]
  assert stopped, out[-2000:]
  step = int(stopped[0].split('Stopped at step ')[1].split(':')[0])
  assert 3 <= step < 200
  assert (workdir / 'checkpoints' / str(step)).is_dir()
  assert workers, 'the run started no worker process'
  deadline = time.time() + 1  # orphans outlive this second; workers that exit don't
  while [w for w in workers if fault_drill.alive(w)] and time.time() < deadline:
    time.sleep(0.05)
  assert not [w for w in workers if fault_drill.alive(w)], 'orphaned grain workers'
  resumed = subprocess.run(
    cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300
  )  # the same command resumes and finishes
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'Resumed from checkpoint at step {step}.' in resumed.stderr
  assert (workdir / 'checkpoints' / '200').is_dir()


def digits_config(**overrides):
  """configs/quickstart.py shrunk to a 32-wide 2-layer MLP and a few steps."""
  from configs import quickstart  # pylint: disable=import-outside-toplevel

  c = quickstart.get_config()
  c.model.width, c.model.depth = 32, 2
  c.num_train_steps, c.log_every_steps, c.eval_every_steps = 4, 2, 1000
  c.checkpoint_every_steps = 2
  c.update_from_flattened_dict(overrides)  # dotted keys, e.g. 'model.width'
  return c


def _flip_bytes(path: Path, count: int = 64) -> None:
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  for i in range(middle, min(len(data), middle + count)):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_file(step_dir: Path) -> Path:
  return max(
    (p for p in step_dir.rglob('*') if p.is_file() and 'sha256' not in p.name),
    key=lambda p: p.stat().st_size,
  )


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory) -> Path:
  """A 4-step digits run with checkpoints at steps 2 and 4 (copy it before damaging it)."""
  import jax  # pylint: disable=import-outside-toplevel

  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  workdir = tmp_path_factory.mktemp('finished')
  train.train_and_evaluate(digits_config(), str(workdir), devices=jax.devices()[:1])
  return workdir


def test_rerun_of_a_finished_run_reports_what_it_recorded(tmp_path):
  """A run killed after its last checkpoint, rerun: the results still hold the initial
  logits norm and the last train metrics (from its event files), as the first call's did."""
  import jax  # pylint: disable=import-outside-toplevel

  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  first = train.train_and_evaluate(digits_config(), str(tmp_path), devices=jax.devices()[:1])[1]
  again = train.train_and_evaluate(digits_config(), str(tmp_path), devices=jax.devices()[:1])[1]
  for key in ('init/logits_norm', 'init/temperature', 'train/loss', 'eval/accuracy'):
    assert again[key] == pytest.approx(first[key], rel=1e-6), key


@pytest.mark.parametrize('damage', ['flipped_bytes', 'truncated', 'garbage_iterator_json'])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
  finished_run, tmp_path, damage, caplog
):
  import jax  # pylint: disable=import-outside-toplevel

  from rankdeficit.run import integrity  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import train

  tmp_path = tmp_path / 'run'
  shutil.copytree(finished_run, tmp_path)
  latest = tmp_path / 'checkpoints' / '4'
  assert integrity.verify(str(latest)) is None and integrity.is_sealed(str(latest))
  if damage == 'flipped_bytes':
    _flip_bytes(_largest_file(latest))
  elif damage == 'truncated':
    victim = _largest_file(latest)
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
  else:  # unsealed (e.g. killed before sealing): only orbax/grain parsing can tell
    (latest / integrity.MANIFEST).unlink()
    iterator_files = [f for f in (latest / 'data_iter').rglob('*') if f.is_file()]
    assert iterator_files
    for f in iterator_files:
      f.write_text('{not json')
  caplog.set_level('WARNING')
  state, _ = train.train_and_evaluate(
    digits_config(num_train_steps=6), str(tmp_path), devices=jax.devices()[:1]
  )
  warnings = [r.getMessage() for r in caplog.records if 'corrupt' in r.getMessage()]
  assert any('step 4' in w for w in warnings), warnings
  assert (tmp_path / 'checkpoints' / 'corrupt' / '4').is_dir()
  assert int(state.step) == 6
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [
    2,
    4,
    6,
  ]  # 4 re-trained from 2


def test_second_process_on_a_locked_workdir_exits_before_compiling(tmp_path):
  from rankdeficit.run import workdir_lock  # pylint: disable=import-outside-toplevel

  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    (tmp_path / workdir_lock.LOCK_FILE).write_text(
      f'{{"host": "{os.uname().nodename}", "pid": {holder.pid}, "started": 0, '
      f'"heartbeat": {time.time()}}}'
    )
    out = subprocess.run(
      digits_command(tmp_path, 4), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=120
    )
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
  from rankdeficit.run import config_diff  # pylint: disable=import-outside-toplevel

  saved = (finished_run / 'config.json').read_text()
  out = subprocess.run(
    digits_command(finished_run, 4, '--config.temperature=100'),
    env=ENV,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode != 0
  assert (
    f'error: workdir {finished_run} holds checkpoints trained with a different '
    f'config: temperature (1.0 -> 100.0)'
  ) in out.stderr, out.stderr[-1000:]
  assert (finished_run / 'config.json').read_text() == saved
  with pytest.raises(ValueError, match=r"config: loss \('ce' -> 'mse'\)"):
    config_diff.check_resumable(digits_config(loss='mse'), str(finished_run))
  # Bookkeeping and a longer budget may change.
  config_diff.check_resumable(
    digits_config(num_train_steps=8, log_every_steps=1), str(finished_run)
  )
  with pytest.raises(ValueError, match=r'num_train_steps \(4 -> 3\)'):
    config_diff.check_resumable(digits_config(num_train_steps=3), str(finished_run))
  with pytest.raises(ValueError, match=r'num_workers \(0 -> 2\)'):
    config_diff.check_resumable(digits_config(num_workers=2), str(finished_run))


def test_default_workdir_separates_runs_that_differ_in_weights():
  from rankdeficit import main  # pylint: disable=import-outside-toplevel

  base = main.default_workdir(digits_config(), 'configs/quickstart.py')
  assert base.startswith(os.path.join('runs', 'quickstart_T1_seed0_'))
  assert main.default_workdir(digits_config(log_every_steps=7), 'q.py').endswith(
    base.rsplit('_', 1)[1]
  )
  for change in (
    {'loss': 'mse'},
    {'model.init': 'normal'},
    {'model.width': 64},
    {'dataset': 'mnist'},
  ):
    assert main.default_workdir(digits_config(**change), 'configs/quickstart.py') != base


@pytest.mark.parametrize(
  'overrides, field',
  [
    ({'temperature': float('inf')}, 'temperature'),
    ({'num_epochs': -1}, 'num_epochs'),
    ({'learning_rate': float('nan')}, 'learning_rate'),
    ({'keep_checkpoints': 0}, 'keep_checkpoints'),
    ({'checkpoint_every_steps': 0}, 'checkpoint_every_steps'),
    ({'log_every_steps': 0}, 'log_every_steps'),
    ({'model.width': 0}, 'model.width'),
    ({'image_size': 0}, 'image_size'),
    ({'device_resize_canvas': 8}, 'device_resize_canvas'),
    ({'train_subset': -1}, 'train_subset'),
    ({'batch_size': 2048}, 'batch_size'),
    ({'num_train_steps': 0}, 'num_train_steps'),
    ({'temperature_schedule': 'cosine'}, 'final_temperature'),
    ({'temperature_schedule': 'step', 'final_temperature': 1.0}, 'temperature_milestones'),
    ({'seed': -1}, 'seed'),
    ({'seed': 2**32}, 'seed'),
  ],
)
def test_bad_numbers_are_refused_naming_the_field(overrides, field):
  from rankdeficit.plan import validation  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match=rf'^config\.{field}=') as error:
    validation.validate_config(digits_config(**overrides), num_devices=1)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('content', [b'\x93NUMPY not an npz', b'just some text\n'])
def test_pretrained_path_that_is_not_an_npz(tmp_path, content):
  from rankdeficit.plan import validation  # pylint: disable=import-outside-toplevel

  path = tmp_path / 'weights.npy'
  path.write_bytes(content)
  config = digits_config(**{'model.name': 'vit_tiny', 'model.pretrained_path': str(path)})
  with pytest.raises(ValueError, match='pretrained_path=.*not an .npz'):
    validation.validate_config(config, num_devices=1)


@pytest.mark.parametrize(
  'extra, message',
  [
    (['--config.keep_checkpoints=0'], 'error: config.keep_checkpoints=0 is invalid'),
    (['--config.no_such_field=1'], 'error: unknown config field'),
  ],
)
def test_cli_rejects_bad_input_in_one_line_and_writes_nothing(tmp_path, extra, message):
  workdir = tmp_path / 'run'
  out = subprocess.run(
    digits_command(workdir, 4) + extra,
    env=ENV,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode != 0
  assert message in out.stderr and 'Traceback' not in out.stderr, out.stderr[-1500:]
  assert not workdir.exists()


def test_workdir_that_is_a_file_is_refused(tmp_path):
  from rankdeficit.plan import validation  # pylint: disable=import-outside-toplevel

  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  with pytest.raises(PermissionError, match='is a file'):
    validation.validate_config(digits_config(), str(blocker), num_devices=1, create=False)


def test_unprepared_tfds_dataset_names_the_fix_command(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  empty = str(tmp_path / 'empty')
  with pytest.raises(input_pipeline.DatasetNotFoundError, match='tools.import_data cifar100'):
    datasets.open_source('cifar100', 'train', empty)  # whatever tfds raises here

  # What tfds raises on a fresh machine for a registered, never-prepared dataset.
  def empty_splits(*args, **kwargs):
    raise KeyError("Trying to access splits['train'] but splits is empty")

  monkeypatch.setattr(tfds, 'data_source', empty_splits)
  with pytest.raises(
    input_pipeline.DatasetNotFoundError, match=r'cifar100.*Fix: .*tools.import_data cifar100'
  ):
    datasets.open_source('cifar100', 'train', empty)


def test_download_offline_gives_the_one_line_fix(tmp_path, monkeypatch):
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.plan import validation

  calls = []
  monkeypatch.setattr(datasets, 'host_resolves', lambda host, timeout=0: True)

  def offline(name, data_dir, manual_dir=None):  # nothing may download in tests
    calls.append(name)
    raise ConnectionError('Failed to resolve host www.cs.toronto.edu')

  monkeypatch.setattr(datasets, 'download_and_prepare', offline)
  config = digits_config(dataset='cifar100', data_dir=str(tmp_path / 'empty'), image_size=32)
  with pytest.raises(
    input_pipeline.DatasetNotFoundError, match='downloading it failed .ConnectionError'
  ) as error:
    validation.validate_config(config, num_devices=1)
  assert calls == ['cifar100'] and 'Fix: ' in str(error.value)
  config.download = False
  with pytest.raises(input_pipeline.DatasetNotFoundError, match='Fix: '):
    validation.validate_config(config, num_devices=1)
  assert calls == ['cifar100']


def _npz(path: Path, n: int, seed: int = 0) -> Path:
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  np.savez(path, image=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), label=np.arange(n) % 3)
  return path


def test_reimport_with_other_inputs_or_limits_needs_overwrite(tmp_path, capsys):
  from tools import import_data  # pylint: disable=import-outside-toplevel

  train, test = _npz(tmp_path / 'train.npz', 12), _npz(tmp_path / 'test.npz', 6, seed=1)
  args = ['my_set', f'--data_dir={tmp_path / "tfds"}', f'--train={train}', f'--test={test}']
  assert import_data.main(args) == 0
  assert import_data.main(args) == 0  # the same inputs: kept
  assert import_data.main(args + ['--limit_train=6']) == 1
  assert 'pass --overwrite' in capsys.readouterr().err
  _npz(train, 9, seed=2)  # same path, new contents
  assert import_data.main(args) == 1
  assert 'pass --overwrite' in capsys.readouterr().err
  assert import_data.main(args + ['--overwrite']) == 0
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  assert len(datasets.tfds_data_source('my_set', 'train', str(tmp_path / 'tfds'))) == 9


@pytest.mark.parametrize('case', ['object_npz', 'bad_crc_zip', 'builtin_name'])
def test_import_bad_files_name_the_file(tmp_path, capsys, case):
  import zipfile  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  from tools import import_data  # pylint: disable=import-outside-toplevel

  name, bad = 'my_set', tmp_path / 'train.npz'
  if case == 'object_npz':
    np.savez(bad, image=np.array([object()] * 2, dtype=object), label=np.arange(2))
  elif case == 'bad_crc_zip':
    bad = tmp_path / 'train.zip'
    from PIL import Image  # pylint: disable=import-outside-toplevel

    png = tmp_path / 'x.png'
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    with zipfile.ZipFile(bad, 'w', zipfile.ZIP_STORED) as z:
      z.write(png, 'a/x.png')
      z.write(png, 'b/y.png')
    data = bytearray(bad.read_bytes())
    start = data.find(b'IDAT')  # flip a byte inside the stored PNG: CRC-32 mismatch
    data[start + 6] ^= 0xFF
    bad.write_bytes(bytes(data))
  else:
    name = 'cifar10'
    _npz(bad, 4)
  code = import_data.main([name, f'--data_dir={tmp_path / "tfds"}', f'--train={bad}'])
  err = capsys.readouterr().err
  assert code == 1 and err.startswith('error: ') and 'Traceback' not in err
  assert str(bad) in err or case == 'builtin_name' and 'built-in' in err


@pytest.fixture
def run_main(monkeypatch):
  """`python -m rankdeficit.main <digits_command args>` in this process (no JAX start-up per
  case); returns its exit: 0, or the `sys.exit` message/code."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

  from rankdeficit import main  # pylint: disable=import-outside-toplevel

  logger, console = absl_logging.get_absl_logger(), absl_logging.get_absl_handler()
  handlers, filters, level = list(logger.handlers), list(console.filters), logger.level
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)

  def run(workdir, steps, *extra):
    argv = ['main'] + digits_command(workdir, steps, *extra)[3:]
    monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads its overrides from here
    try:
      main.parse_flags(argv)
      main.main(['main'])
    except SystemExit as e:
      return e.code
    finally:
      flags.FLAGS.unparse_flags()
      for name in [n for n in flags.FLAGS if n.startswith('config.')]:
        delattr(flags.FLAGS, name)  # defined again by the next parse
      for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
        handler.close()
      console.filters[:] = filters
      logger.setLevel(level)  # unparse_flags resets absl's verbosity: later INFO logs vanish
    return 0

  return run


def _snapshot(directory: Path) -> dict:
  return {
    str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
    for p in sorted(directory.rglob('*'))
  }


def test_the_checkpoint_keeps_the_config_when_config_json_is_gone(finished_run, tmp_path, run_main):
  """Issue 25 item 1: deleting config.json no longer lets a run resume under another config."""
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import config_diff

  workdir = tmp_path / 'run'
  shutil.copytree(finished_run, workdir)
  (workdir / 'config.json').unlink()
  assert checkpointing.stored_config(str(workdir))['temperature'] == 1.0
  before = _snapshot(workdir)
  for extra, field in (
    (['--config.temperature=100'], 'temperature (1.0 -> 100.0)'),
    (['--config.model.width=64'], 'model.width (32 -> 64)'),
  ):
    message = run_main(workdir, 6, *extra)
    assert (
      message.startswith(
        f'error: workdir {workdir} holds checkpoints trained with a different config: '
      )
      and field in message
    ), message
    assert '\n' not in message
  assert _snapshot(workdir) == before  # refused before anything was written
  with pytest.raises(ValueError, match=r"loss \('ce' -> 'mse'\)"):
    config_diff.check_resumable(digits_config(loss='mse'), str(workdir))


def test_a_resume_restores_config_json_and_says_what_train_means_cover(
  finished_run, tmp_path, caplog
):
  """Items 1 and 8: config.json comes back from the checkpoint; the first train/* means
  after a resume cover fewer steps than an uninterrupted run's, and the results say so."""
  import jax  # pylint: disable=import-outside-toplevel

  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / 'run'
  shutil.copytree(finished_run, workdir)
  (workdir / 'config.json').write_text('null')  # damaged rather than deleted
  caplog.set_level('INFO', logger='absl')  # whatever another test left absl's level at
  state, results = train.train_and_evaluate(
    digits_config(num_train_steps=6, log_every_steps=3), str(workdir), devices=jax.devices()[:1]
  )
  assert int(state.step) == 6
  assert json.loads((workdir / 'config.json').read_text())['num_train_steps'] == 6
  assert any('restored it from the config stored' in r.getMessage() for r in caplog.records)
  assert results['train/steps_averaged'] == 2  # steps 5 and 6; uninterrupted: 4, 5 and 6
  assert any(
    'average the 2 steps since the resume at step 4, not the 3 steps' in r.getMessage()
    for r in caplog.records
  )


def _without_stored_config(workdir: Path) -> None:
  """Turns a run's checkpoints into ones written before configs were stored."""
  from rankdeficit.run import integrity  # pylint: disable=import-outside-toplevel

  for step_dir in (workdir / 'checkpoints').iterdir():
    if step_dir.name.isdigit():
      shutil.rmtree(step_dir / 'config')
      integrity.seal(str(step_dir))


def test_old_checkpoints_without_a_stored_config_use_config_json(finished_run, tmp_path, run_main):
  import jax  # pylint: disable=import-outside-toplevel

  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import config_diff
  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / 'run'
  shutil.copytree(finished_run, workdir)
  _without_stored_config(workdir)
  assert checkpointing.stored_config(str(workdir)) is None
  with pytest.raises(ValueError, match=r'temperature \(1.0 -> 100.0\)'):
    config_diff.check_resumable(digits_config(temperature=100.0), str(workdir))
  (workdir / 'config.json').write_text('null')  # item 6: was an AttributeError
  before = _snapshot(workdir)
  message = run_main(workdir, 6)
  assert message.startswith('error: ') and 'config.json holds null, not a config' in message
  assert _snapshot(workdir) == before
  (workdir / 'config.json').unlink()  # nothing to compare with: resumes, as before
  state, _ = train.train_and_evaluate(
    digits_config(num_train_steps=6), str(workdir), devices=jax.devices()[:1]
  )
  assert int(state.step) == 6


@pytest.mark.parametrize(
  'extra, message',
  [
    (
      ['--config.temperature_schedule=cosine'],
      'error: config.final_temperature=None is '
      'invalid: it must be a finite number > 0 '
      "with temperature_schedule='cosine'",
    ),
    (['--config.seed=-1'], 'error: config.seed=-1 is invalid'),
    (['--config.seed=4294967296'], 'error: config.seed=4294967296 is invalid'),
  ],
)
def test_refusals_come_before_anything_is_written(tmp_path, run_main, extra, message):
  """Issue 25 item 6: these were tracebacks after log0.txt, run_info.json and an empty
  checkpoints/ were written."""
  workdir = tmp_path / 'run'
  exit_message = run_main(workdir, 4, *extra)
  assert exit_message.startswith(message) and '\n' not in exit_message, exit_message
  assert not workdir.exists()


def test_an_empty_workdir_is_refused(tmp_path, run_main, monkeypatch):
  """Item 8: `--workdir=''` trained into ./runs/... without saying so."""
  monkeypatch.chdir(tmp_path)
  message = run_main('', 4)
  assert message.startswith(
    "error: --workdir='' is empty; give a directory, or leave --workdir out"
  ), message
  assert not any(tmp_path.iterdir())


def test_the_cli_runs_each_preflight_check_once(tmp_path, run_main, monkeypatch):
  """Issue 24 item 1: main and train_and_evaluate each ran validate_config, the lock,
  resume and shared-workdir checks; main now hands train the plan its pre-flight made."""
  from rankdeficit.plan import validation  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import config_diff
  from rankdeficit.run import storage
  from rankdeficit.run import workdir_lock

  calls = []
  for module, name in (
    (validation, 'validate_config'),
    (workdir_lock, 'check_unlocked'),
    (config_diff, 'check_resumable'),
    (storage, 'check_shared_workdir'),
  ):
    real = getattr(module, name)
    monkeypatch.setattr(
      module, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1]
    )
  for steps in (2, 3):  # a fresh run, then its resume
    calls.clear()
    assert run_main(tmp_path / 'run', steps) == 0
    assert sorted(calls) == [
      'check_resumable',
      'check_shared_workdir',
      'check_unlocked',
      'validate_config',
    ]


def _failing_save(mode: str):
  """A CheckpointManager.save that runs out of space at step 4: at once ('sync'), or as
  orbax's background writes do, when the save is waited for ('async')."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  save, wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished

  def partial(manager) -> Path:
    return Path(manager.directory) / '4.orbax-checkpoint-tmp' / 'state' / 'half_written'

  def failing_save(self, step, *args, **kwargs):
    if step < 4:
      return save(self, step, *args, **kwargs)
    if mode == 'sync':
      raise OSError(errno.ENOSPC, 'No space left on device')
    partial(self).parent.mkdir(parents=True)
    partial(self).write_bytes(b'x' * 100)
    return True

  def failing_wait(self):
    wait(self)
    if partial(self).exists():
      raise ValueError(
        'RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database: '
        'Failed to write 960567 bytes to file 6: No space left on device '
        "[os_error_code='28']"
      )

  return failing_save, failing_wait


def test_a_full_disk_ends_in_one_line_and_keeps_the_last_good_checkpoint(
  tmp_path, run_main, monkeypatch
):
  """Issue 25 item 5: a full disk gave ~53 tracebacks ending in an unrelated ImportError."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  from rankdeficit.run import integrity  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import storage

  failing_save, failing_wait = _failing_save('async')
  monkeypatch.setattr(ocp.CheckpointManager, 'save', failing_save)
  monkeypatch.setattr(ocp.CheckpointManager, 'wait_until_finished', failing_wait)
  workdir = tmp_path / 'run'
  message = run_main(workdir, 4, '--config.checkpoint_every_steps=2')
  assert message == (
    f'error: no space left on {storage.device_of(workdir)} while saving '
    f'step 4; the last good checkpoint is step 2'
  ), message
  checkpoints = workdir / 'checkpoints'
  assert sorted(p.name for p in checkpoints.iterdir()) == ['2']  # partial step 4 removed
  assert integrity.is_sealed(str(checkpoints / '2'))
  assert integrity.verify(str(checkpoints / '2')) is None
  assert not (workdir / 'lock').exists()


def test_a_save_refused_at_once_for_space_is_a_disk_full_error(tmp_path, monkeypatch):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(ocp.CheckpointManager, 'save', _failing_save('sync')[0])
  checkpointer = checkpointing.Checkpointer(str(tmp_path), config=digits_config())
  checkpointer.save(2, {'w': np.ones(3)}, None)
  with pytest.raises(
    checkpointing.DiskFullError, match=r'while saving step 4; the last good checkpoint is step 2$'
  ):
    checkpointer.save(4, {'w': np.ones(3)}, None)
  checkpointer.close()  # does not raise the same error again
  assert checkpointing.finished_steps(str(tmp_path)) == [2]
  assert checkpointing.stored_config(str(tmp_path))['model']['width'] == 32
  assert checkpointing.is_disk_full(
    ValueError("Failed to write 9 bytes to file 6: No space left on device [os_error_code='28']")
  )


def test_a_failing_log_file_warns_once_instead_of_a_traceback_per_line(tmp_path, capsys):
  from rankdeficit import main  # pylint: disable=import-outside-toplevel

  handler = main._log_file_handler(str(tmp_path))  # pylint: disable=protected-access
  handler.stream.close()
  handler.stream = open(os.devnull, 'r', encoding='utf-8')  # pylint: disable=consider-using-with
  logger = logging.getLogger('rankdeficit_test_log_file')
  logger.addHandler(handler)
  try:
    for i in range(3):
      logger.warning('line %d', i)
  finally:
    logger.removeHandler(handler)
    handler.close()
  err = capsys.readouterr().err
  assert err.count('warning: cannot write the log file') == 1 and 'Traceback' not in err


def test_offline_download_fails_fast_when_the_host_does_not_resolve(tmp_path, monkeypatch):
  """Issue 25 item 7: tfds retried the look-up for 3.5 minutes before the message."""
  import socket  # pylint: disable=import-outside-toplevel

  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.plan import validation

  for variable in (
    'https_proxy',
    'HTTPS_PROXY',
    'http_proxy',
    'HTTP_PROXY',
    'all_proxy',
    'ALL_PROXY',
  ):
    monkeypatch.delenv(variable, raising=False)
  looked_up, downloads = [], []

  def offline(host, *args, **kwargs):
    looked_up.append(host)
    raise socket.gaierror(socket.EAI_AGAIN, 'Temporary failure in name resolution')

  monkeypatch.setattr(socket, 'getaddrinfo', offline)
  monkeypatch.setattr(
    datasets, 'download_and_prepare', lambda *args, **kwargs: downloads.append(args)
  )
  config = digits_config(dataset='cifar100', data_dir=str(tmp_path / 'empty'), image_size=32)
  start = time.time()
  with pytest.raises(
    input_pipeline.DatasetNotFoundError,
    match=r'cannot resolve www\.cs\.toronto\.edu.*Fix: .*'
    r'tools\.import_data cifar100',
  ) as error:
    validation.validate_config(config, num_devices=1)
  assert time.time() - start < 5 and looked_up == ['www.cs.toronto.edu'] and not downloads
  assert '\n' not in str(error.value)
  # A resolver that hangs is given up on after the timeout.
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *args, **kwargs: time.sleep(30))
  start = time.time()
  assert not datasets.host_resolves('www.cs.toronto.edu', timeout=0.2)
  assert time.time() - start < 2


def test_analysing_a_run_that_is_still_training_warns(finished_run, tmp_path, monkeypatch, caplog):
  """Item 8: an analysis of a run whose lock a live process holds said nothing."""
  from rankdeficit import analyze  # pylint: disable=import-outside-toplevel
  from rankdeficit.plan import run_plan
  from rankdeficit.run import workdir_lock  # pylint: disable=import-outside-toplevel

  assert analyze.warn_if_training(str(finished_run)) is None
  workdir = tmp_path / 'run'
  shutil.copytree(finished_run, workdir)

  def loaded(*args, **kwargs):
    raise InterruptedError('stop the analysis here: only its start is tested')

  monkeypatch.setattr(run_plan, 'load_model', loaded)
  caplog.set_level('WARNING')
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    (workdir / workdir_lock.LOCK_FILE).write_text(
      json.dumps(
        {
          'host': os.uname().nodename,
          'pid': holder.pid,
          'started': time.time(),
          'heartbeat': time.time(),
        }
      )
    )
    with pytest.raises(InterruptedError):
      analyze.analyze_run(str(workdir))
  finally:
    holder.kill()
    holder.wait()
  assert f'is still training (locked by host {os.uname().nodename} pid {holder.pid}' in (
    caplog.text
  )
  assert analyze.warn_if_training(str(workdir)) is None  # its holder is dead now
