"""Sweeps through submitit: the local executor runs the same job objects SLURM would."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import aggregate
from rankdeficit import storage, sweep

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / 'configs' / 'sweeps'


@pytest.mark.parametrize('name, num_points', [
    ('smoke', 2), ('table1', 54), ('table6', 6), ('table7', 36), ('table8', 36),
    ('table9', 24)])
def test_every_sweep_loads_with_distinct_workdirs(name, num_points, tmp_path):
  s = sweep.load_sweep(str(SWEEPS / f'{name}.py'), str(tmp_path))
  assert s.name == name and len(s.points) == num_points
  assert len({p.workdir for p in s.points}) == num_points
  for point in s.points:
    assert point.workdir.startswith(os.path.join(str(tmp_path), name) + '/')
    sweep.build_config(point)  # every override names a real config field


def test_point_names_come_from_the_overrides():
  assert sweep.point_name({'config': 'configs/resnet50_in1k.py', 'temperature': 100.0,
                           'seed': 2}) == 'resnet50_in1k_temperature-100_seed-2'
  assert sweep.point_name({'model.width': 512, 'loss': 'mse'}) == 'model.width-512_loss-mse'


def test_unknown_override_is_rejected(tmp_path):
  point = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path)).points[0]
  bad = sweep.Point(point.config, {'temprature': 10.0}, point.workdir, {})
  with pytest.raises(ValueError, match="'temprature'"):
    sweep.build_config(bad)


def test_a_killed_point_is_resubmitted_and_a_running_one_is_not(tmp_path):
  s = sweep.load_sweep(str(SWEEPS / 'smoke.py'), str(tmp_path))
  running, killed = s.points
  for point, beat in ((running, time.time()), (killed, time.time() - 3600)):
    workdir = storage.workdir_path(point.workdir)
    workdir.mkdir(parents=True)
    storage.write_json(workdir / sweep.STATUS_FILE, {'state': 'running', 'time': beat})
    (workdir / sweep.HEARTBEAT_FILE).write_text(str(beat))
  assert [sweep.point_status(p)['state'] for p in s.points] == ['running', 'killed']
  assert sweep.to_submit(s) == [killed]


def test_slurm_dry_run_prints_the_job_array(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'rankdeficit.sweep', f'--sweep={SWEEPS / "table9.py"}',
       '--executor=slurm', '--dry_run', f'--root={tmp_path}'],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
      check=True).stdout
  assert sum(line.startswith('submit ') for line in out.splitlines()) == 24
  for line in ('#SBATCH --array=0-23%8', '#SBATCH --gpus-per-node=8', '#SBATCH --time=4320',
               '#SBATCH --job-name=rankdeficit_table9'):
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
