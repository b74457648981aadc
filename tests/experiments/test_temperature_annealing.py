"""temperature_annealing: valid configs, rendering from synthetic run dirs, the grid plumbing
(diverged runs are marked once and never retrained)."""

import csv
import json
import os

import numpy as np
import pytest

from experiments import temperature_annealing
from experiments.figures import beyond_annealing
from experiments.figures import grid
from experiments.figures import runs
from rankdeficit import experiment
from rankdeficit.plan import validation
from rankdeficit.run import run_dir

SEEDS = 2
# Per schedule: (AUROC, rho, accuracy) of seed 0; seed s adds s / 100 to each.
TRUTH = {
  'T1': (0.60, 0.20, 0.40),
  'T100': (0.90, 0.50, 0.35),
  'cosine': (0.80, 0.30, 0.41),
  'step': (0.70, 0.45, 0.30),
}


def fake_run(workdir: str, cell: grid.Cell, seed: int) -> None:
  """A finished, analysed run directory with the TRUTH of its cell."""
  auroc, rho, acc = (v + seed / 100 for v in TRUTH[cell.name])
  final_t = 1.0 if cell.name != 'T100' else 100.0
  os.makedirs(os.path.join(workdir, 'analysis'), exist_ok=True)
  files = {
    'config.json': {'temperature': cell.temperature},
    run_dir.TRAIN_RESULTS_FILE: {'init/logits_norm': 3.0, 'eval/accuracy': acc},
    os.path.join(run_dir.ANALYSIS_DIR, run_dir.ANALYSIS_FILE): {
      'kappa': 0.5,
      'rho': rho,
      'solution_rank': 9,
      'temperature': final_t,
      'test_accuracy': 0.0,
      'ood_detection': {'auroc': auroc, 'fpr95_neco': 1 - auroc},
    },
  }
  for name, content in files.items():
    with open(os.path.join(workdir, name), 'w') as f:
      json.dump(content, f)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  from clu import metric_writers  # pylint: disable=import-outside-toplevel

  out = tmp_path_factory.mktemp('beyond_cpu')
  root = os.path.join(out, 'runs')
  for cell in beyond_annealing.cells():
    for seed in range(SEEDS):
      workdir = grid.workdir(root, cell, seed)
      fake_run(workdir, cell, seed)
      if seed == 0 and cell.get('model') == 'MLP':
        writer = metric_writers.create_default_writer(workdir)
        for step in (10, 20):
          writer.write_scalars(step, {'train/temperature': cell.temperature / step})
        writer.close()
  loaded = temperature_annealing.main(['--render_only', f'--seeds={SEEDS}', '--outdir', str(out)])
  return out, loaded


def test_every_cell_is_a_valid_config_and_anneals_to_one(local_data_dir):
  for smoke in (False, True):
    for cell in beyond_annealing.cells(smoke):
      point = runs.point(
        cell.setting, grid.request(cell), cell.temperature, 0, workdir='', data_dir=local_data_dir
      )
      config = experiment.build_config(point)
      validation.validate_config(config, None, 1, create=False)
      if cell.name in ('cosine', 'step'):
        assert config.temperature == 100 and config.final_temperature == 1
        assert config.temperature_schedule == cell.name
      if cell.name == 'step':  # one milestone, at half of training
        assert config.temperature_milestones == (config.num_epochs / 2,)


def test_files_and_table_from_the_runs(rendered):
  out, loaded = rendered
  assert len(loaded.runs) == 8
  png = out / 'temperature_annealing.png'
  assert png.read_bytes()[:4] == b'\x89PNG' and png.stat().st_size < 300_000
  with open(out / 'temperature_annealing.csv') as f:
    rows = {(r['model'], r['cell']): r for r in csv.DictReader(f)}
  row = rows[('ResNet-20', 'cosine')]
  expected = [0.80 + s / 100 for s in range(SEEDS)]
  np.testing.assert_allclose(float(row['auroc_mean']), np.mean(expected), rtol=1e-9)
  np.testing.assert_allclose(float(row['auroc_std']), np.std(expected, ddof=1), rtol=1e-9)
  md = (out / 'temperature_annealing.md').read_text()
  assert 'cosine 100 -> 1' in md and 'step 100 -> 1 at half' in md


def test_tradeoff_shares(rendered):
  _, loaded = rendered
  found = beyond_annealing.tradeoff(loaded)
  # cosine: AUROC 0.80 between 0.60 (T=1) and 0.90 (T=100) keeps 2/3 of the gain; rho 0.30
  # between 0.20 and 0.50 recovers 2/3 of the loss; accuracy 0.41 vs 0.40 is +1 point.
  cosine = found['MLP']['cosine']
  assert cosine['auroc_gain_kept'] == pytest.approx(2 / 3)
  assert cosine['rho_loss_recovered'] == pytest.approx(2 / 3)
  assert cosine['accuracy_vs_T1'] == pytest.approx(0.01)
  assert found['ResNet-20']['step']['auroc_gain_kept'] == pytest.approx(1 / 3)
  md = (rendered[0] / 'temperature_annealing.md').read_text()
  assert 'MLP cosine: AUROC gain kept 67%, rho loss recovered 67%' in md


def test_a_diverged_run_is_marked_once(tmp_path, monkeypatch):
  calls = []

  def fake_run_point(point, **_):
    calls.append((point.workdir, point.overrides['temperature'], point.overrides['seed']))
    os.makedirs(point.workdir, exist_ok=True)
    raise FloatingPointError('Non-finite training loss at step 3')

  monkeypatch.setattr(experiment, 'run_point', fake_run_point)
  cells = beyond_annealing.cells()[:2]
  grid.train_missing(cells, str(tmp_path), 1, None)
  grid.train_missing(cells, str(tmp_path), 1, None)  # nothing is retried
  assert [(t, s) for _, t, s in calls] == [(1.0, 0), (100.0, 0)]
  loaded = grid.load_cells(cells, str(tmp_path), 1)
  assert loaded.diverged == {c.key: [0] for c in cells} and not loaded.runs
  assert 'Diverged' in grid.runs_note(loaded)


def test_step0_values_of_a_resumed_run_come_from_its_events(tmp_path):
  from clu import metric_writers  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'temperature': 0.25}, f)
  with open(os.path.join(workdir, run_dir.TRAIN_RESULTS_FILE), 'w') as f:
    json.dump({'eval/accuracy': 0.5}, f)  # a resumed run reports no init/* values
  writer = metric_writers.create_default_writer(workdir)
  writer.write_scalars(0, {'init/logits_norm': 0.125, 'init/temperature': 0.25})
  writer.close()
  run = runs.read_run(workdir, 1.0, 0)
  assert grid.initial_norm(run) == 0.125 and grid.trained_temperature(run) == 0.25


def test_settings_trains_only_those_cells(tmp_path, monkeypatch):
  from rankdeficit.run import runtime  # pylint: disable=import-outside-toplevel

  calls = []
  monkeypatch.setattr(runtime, 'enable_compilation_cache', lambda path: None)
  monkeypatch.setattr(
    experiment,
    'run_point',  # <runs_dir>/<setting name>/<cell>_s<seed>
    lambda point, **_: calls.append(os.path.basename(os.path.dirname(point.workdir))),
  )
  with pytest.raises(SystemExit, match='no analysed run'):  # nothing really trained
    temperature_annealing.main(['--settings=anneal_mlp', '--seeds=1', '--outdir', str(tmp_path)])
  assert calls == ['anneal_mlp'] * len(beyond_annealing.SCHEDULES)
  with pytest.raises(SystemExit, match="unknown \\['resnet'\\]"):
    temperature_annealing.main(['--settings=resnet', '--outdir', str(tmp_path)])


def test_no_share_of_a_gain_that_high_t_does_not_have(tmp_path, monkeypatch):
  # T = 100 worse at detection (AUROC 0.40 < 0.60) and better at OOD generalization
  # (rho 0.10 < 0.20) than T = 1: nothing to keep or recover, whatever the annealed runs do.
  monkeypatch.setitem(TRUTH, 'T100', (0.40, 0.10, 0.35))
  root = tmp_path / 'runs'
  for cell in beyond_annealing.cells():
    fake_run(grid.workdir(str(root), cell, 0), cell, 0)
  loaded = temperature_annealing.main(['--render_only', '--seeds=1', '--outdir', str(tmp_path)])
  shares = beyond_annealing.tradeoff(loaded)['MLP']['cosine']
  assert np.isnan(shares['auroc_gain_kept']) and np.isnan(shares['rho_loss_recovered'])
  assert (
    'AUROC gain kept n/a (T = 100 has none)' in (tmp_path / 'temperature_annealing.md').read_text()
  )
