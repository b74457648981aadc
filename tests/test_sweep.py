"""Sweeps through submitit: the local executor runs the same job objects SLURM would."""

import dataclasses
import os
from pathlib import Path
import subprocess
import sys
import time

import pytest

from experiments import aggregate
from rankdeficit import experiment
from rankdeficit import sweep
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import run_dir
from rankdeficit.run import storage

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / 'configs' / 'sweeps'


@pytest.mark.parametrize(
  'name, num_points',
  [('smoke', 2), ('table1', 54), ('table6', 6), ('table7', 36), ('table8', 36), ('table9', 24)],
)
def test_every_sweep_loads_with_distinct_workdirs(name, num_points, tmp_path):
  s = sweep.load_sweep(str(SWEEPS / f'{name}.py'), str(tmp_path))
  assert s.name == name and len(s.points) == num_points
  assert len({p.workdir for p in s.points}) == num_points
  for point in s.points:
    assert point.workdir.startswith(os.path.join(str(tmp_path), name) + '/')
    experiment.build_config(point)  # every override names a real config field


def test_point_names_come_from_the_overrides():
  assert (
    sweep.point_name({'config': 'configs/resnet50_in1k.py', 'temperature': 100.0, 'seed': 2})
    == 'resnet50_in1k_temperature-100_seed-2'
  )
  assert sweep.point_name({'model.width': 512, 'loss': 'mse'}) == 'model.width-512_loss-mse'


def test_unknown_override_is_rejected(tmp_path):
  point = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path)).points[0]
  bad = experiment.Point(point.config, {'temprature': 10.0}, point.workdir, None)
  with pytest.raises(ValueError, match="'temprature'"):
    experiment.build_config(bad)


def test_analysis_options_become_an_analysis_config(tmp_path):
  smoke = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path)).points[0].analysis
  assert smoke == AnalysisConfig.from_overrides(
    {'ood_dataset': '', 'probe_epochs': 2, 'probe_batch_size': 256, 'max_dims': 256, 'plots': False}
  )
  assert smoke.probe.num_epochs == 2 and smoke.probe.learning_rate == 1e-3
  # `{}` analyses with the defaults (it used to skip the analysis).
  assert sweep.load_sweep(str(SWEEPS / 'table6.py'), str(tmp_path)).points[0].analysis == (
    AnalysisConfig()
  )
  bad = tmp_path / 'bad.py'
  bad.write_text(
    "def get_sweep():\n  return {'config': 'configs/quickstart.py', "
    "'points': [{}], 'analyze': {'probe_epoch': 2}}\n"
  )
  with pytest.raises(ValueError, match="Sweep bad: Unknown analysis option.*'probe_epoch'"):
    sweep.load_sweep(str(bad), str(tmp_path))


def test_a_killed_point_is_resubmitted_and_a_running_one_is_not(tmp_path):
  s = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path))
  running, killed = s.points
  for point, beat in ((running, time.time()), (killed, time.time() - 3600)):
    workdir = storage.workdir_path(point.workdir)
    workdir.mkdir(parents=True)
    storage.write_json(
      run_dir.RunDir(workdir).sweep_status_file, {'state': 'running', 'time': beat}
    )
    (workdir / run_dir.SWEEP_HEARTBEAT_FILE).write_text(str(beat))
  assert [sweep.point_status(p)['state'] for p in s.points] == ['running', 'killed']
  assert sweep.to_submit(s) == [killed]


def test_slurm_dry_run_prints_the_job_array(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'rankdeficit.sweep',
      f'--sweep={SWEEPS / "table9.py"}',
      '--executor=slurm',
      '--dry_run',
      f'--root={tmp_path}',
    ],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=str(REPO)),
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert sum(line.startswith('submit ') for line in out.splitlines()) == 24
  for line in (
    '#SBATCH --array=0-23%8',
    '#SBATCH --gpus-per-node=8',
    '#SBATCH --time=4320',
    '#SBATCH --job-name=rankdeficit_table9',
  ):
    assert line in out
  assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_local_smoke_sweep_runs_then_skips_and_aggregates(tmp_path, monkeypatch):
  monkeypatch.setenv('PYTHONPATH', str(REPO))  # the jobs import this checkout
  s = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path))
  jobs = sweep.submit(s, 'local', str(tmp_path / 'submitit'), wait=True)
  assert len(jobs) == 2
  for job in jobs:
    assert job.exception() is None, job.stderr()
  assert [sweep.point_status(p)['state'] for p in s.points] == ['done', 'done']
  assert sweep.submit(s, 'local', str(tmp_path / 'submitit'), wait=True) == []  # skipped
  assert '2 done' in sweep.status_table(s)

  table = aggregate.write_tables(s, str(tmp_path))
  assert (tmp_path / 'smoke' / 'table.md').read_text() == table
  rows = [l for l in table.splitlines() if l.startswith('| quickstart')]
  assert len(rows) == 2 and '| 1 |' in rows[0]  # T=1 and T=100, one seed each
  for point in s.points:
    assert (Path(point.workdir) / 'analysis' / 'analysis.json').exists()
    assert experiment.is_done(point.workdir, analysed=True)  # the one done-marker
    marker = experiment.read_train_results(point.workdir)
    assert marker['train_seconds'] > 0 and 'eval/accuracy' in marker


def _sweep_file(path: Path, points) -> Path:
  """A sweep file outside configs/sweeps/ whose base config is a relative path."""
  path.write_text(
    f"def get_sweep():\n  return {{'config': 'configs/quickstart.py', "
    f"'points': {points!r}, 'slurm': {{'time': 5}}}}\n"
  )
  return path


@pytest.mark.parametrize('key', ['no_such_field', 'model.widht', 'no_such.parent'])
def test_a_bad_point_is_refused_before_anything_is_submitted(tmp_path, key):
  """Issue 25 item 2: such a sweep said '2 job(s) submitted' and its jobs died."""
  s = sweep.load_sweep(
    str(_sweep_file(tmp_path / 'mine.py', [{'temperature': 1.0}, {'temperature': 100.0, key: 1}])),
    str(tmp_path / 'runs'),
  )
  # Item 8: a relative config is read from the repository root, wherever the sweep is.
  assert s.points[0].config == str(REPO / 'configs' / 'quickstart.py')
  bad = s.points[1].name
  with pytest.raises(
    ValueError,
    match=rf'^sweep mine, point {bad}: Unknown config field '
    rf"'{key}'",
  ):
    sweep.check_points(s)
  with pytest.raises(ValueError, match=f"'{key}'"):
    sweep.submit(s, 'local', str(tmp_path / 'submitit'))
  assert not (tmp_path / 'runs').exists() and not (tmp_path / 'submitit').exists()


def test_points_are_checked_like_main_does(tmp_path):
  s = sweep.load_sweep(
    str(_sweep_file(tmp_path / 'mine.py', [{'seed': 0}, {'seed': -1}])), str(tmp_path / 'runs')
  )
  with pytest.raises(ValueError, match=r'point seed--1: config\.seed=-1 is invalid'):
    sweep.check_points(s, num_devices=1)
  table9 = sweep.load_sweep(str(SWEEPS / 'table9.py'), str(tmp_path))
  assert sweep.job_devices(table9, 'slurm') == 8
  sweep.check_points(table9, sweep.job_devices(table9, 'slurm'))


def test_dry_run_refuses_a_bad_point_in_one_line(tmp_path, capsys):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel

  before, level = set(flags.FLAGS), logging.get_absl_logger().level
  sweep._define_flags()  # pylint: disable=protected-access
  path = _sweep_file(tmp_path / 'mine.py', [{'temperature': 1.0}, {'no_such_field': 1}])
  flags.FLAGS.mark_as_parsed()  # not FLAGS(argv): rankdeficit.main's --config is required
  flags.FLAGS.sweep, flags.FLAGS.dry_run = str(path), True
  flags.FLAGS.root = str(tmp_path / 'runs')
  try:
    with pytest.raises(SystemExit) as exit_:
      sweep.main([])
  finally:
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:  # --sweep is required: it would stop other CLIs
      delattr(flags.FLAGS, name)
    logging.get_absl_logger().setLevel(level)  # unparse_flags resets absl's verbosity
  assert str(exit_.value.code).startswith(
    "error: sweep mine, point no_such_field-1: Unknown config field 'no_such_field'"
  )
  assert 'submit ' not in capsys.readouterr().out and not (tmp_path / 'runs').exists()


def _record(point, job_id: str, *, submitted: float, executor='local', status=None, result=None):
  import pickle  # pylint: disable=import-outside-toplevel

  workdir = storage.workdir_path(point.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  folder = Path(point.workdir).parent / 'submitit'
  folder.mkdir(exist_ok=True)
  storage.write_json(
    run_dir.RunDir(workdir).sweep_job_file,
    {
      'job_id': job_id,
      'executor': executor,
      'folder': str(folder),
      'host': os.uname().nodename,
      'time': submitted,
    },
  )
  if status is not None:
    storage.write_json(run_dir.RunDir(workdir).sweep_status_file, status)
    if status['state'] == 'done':  # a job that finished wrote the done-marker first
      storage.write_json(run_dir.RunDir(workdir).train_results_file, status['results'])
  if result is not None:
    (folder / f'{job_id}_0_result.pkl').write_bytes(pickle.dumps(result))


def test_status_tells_not_submitted_pending_and_died_before_starting(tmp_path):
  """Items 2 and 8: a job that died before it started showed 'pending' for ever, and so
  did a point that was never submitted."""
  s = sweep.load_sweep(
    str(_sweep_file(tmp_path / 'mine.py', [{'seed': seed} for seed in range(5)])),
    str(tmp_path / 'runs'),
  )
  never, queued, dead, raised, restarted = s.points
  assert sweep.point_status(never) == {'state': 'not submitted'}
  _record(queued, str(os.getpid()), submitted=time.time())  # its process is alive
  finished = subprocess.Popen([sys.executable, '-c', 'pass'])
  finished.wait()
  _record(dead, str(finished.pid), submitted=time.time())
  _record(
    raised,
    '4242',
    submitted=time.time(),
    result=('error', 'Traceback (most recent call last):\nValueError: boom\n'),
  )
  _record(
    restarted,
    str(finished.pid),
    submitted=time.time() - 60,
    status={'state': 'done', 'time': time.time(), 'results': {}},
  )
  states = {p.name: sweep.point_status(p) for p in s.points}
  assert [states[p.name]['state'] for p in s.points] == [
    'not submitted',
    'pending',
    'failed',
    'failed',
    'done',
  ]
  assert 'exited without recording a state' in states[dead.name]['error']
  assert states[raised.name]['error'].endswith('ValueError: boom')
  assert sweep.to_submit(s) == [never, dead, raised]
  table = sweep.status_table(s)
  assert 'not submitted' in table and '2 failed' in table


def test_a_job_whose_config_fails_records_failed(tmp_path):
  point = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path)).points[0]
  bad = experiment.Point(point.config, {'temprature': 10.0}, point.workdir, None)
  with pytest.raises(ValueError, match="'temprature'"):
    sweep.TrainPoint(bad)()
  status = sweep.point_status(bad)
  assert status['state'] == 'failed' and "'temprature'" in status['error']


def test_done_is_the_experiment_done_marker(tmp_path):
  """A point is done when `experiment.is_done` says so, whatever sweep_status.json holds: a
  run finished by another driver is not resubmitted, and a `done` without the marker is."""
  s = sweep.load_sweep(
    str(_sweep_file(tmp_path / 'mine.py', [{'seed': seed} for seed in range(3)])),
    str(tmp_path / 'runs'),
  )
  elsewhere, stale, unanalysed = s.points
  rd = run_dir.RunDir(elsewhere.workdir)
  rd.root.mkdir(parents=True)
  storage.write_json(rd.train_results_file, {'eval/accuracy': 0.5, 'train_seconds': 3.0})
  rd = run_dir.RunDir(stale.workdir)
  rd.root.mkdir(parents=True)
  storage.write_json(rd.sweep_status_file, {'state': 'done', 'time': time.time(), 'results': {}})
  assert sweep.point_status(elsewhere) == {
    'state': 'done',
    'results': {'eval/accuracy': 0.5, 'train_seconds': 3.0},
  }
  stale_status = sweep.point_status(stale)
  assert (
    stale_status['state'] == 'failed' and 'train_results.json is missing' in (stale_status['error'])
  )
  # Asked for an analysis: trained is not done until analysed.
  asks = dataclasses.replace(unanalysed, analysis=AnalysisConfig())
  rd = run_dir.RunDir(asks.workdir)
  rd.root.mkdir(parents=True)
  storage.write_json(rd.train_results_file, {'eval/accuracy': 0.5})
  assert sweep.point_status(asks) == {'state': 'not submitted'}
  assert sweep.point_status(unanalysed)['state'] == 'done'
  assert sweep.to_submit(sweep.Sweep(s.name, [elsewhere, stale, asks], s.slurm)) == [stale, asks]
  assert 'eval/accuracy=0.5' in sweep.status_table(s)
