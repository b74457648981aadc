"""logits_norm_knob: the grid's configs are valid, and it renders from synthetic run dirs.

The synthetic runs make every metric a known function of the run (init, T, seed), so the
table and CSV can be checked against the run files; training is never called.
"""

import csv
import json
import os

import numpy as np
import pytest

from experiments import logits_norm_knob
from experiments.figures import beyond_knob
from experiments.figures import grid
from experiments.figures import runs
from rankdeficit import experiment
from rankdeficit.plan import validation
from rankdeficit.run import run_dir

SEEDS = 2
N0 = {'pytorch': 0.1, 'kaiming': 4.0, 'normal0.1': 35.0, 'normal0.05': 0.15}
LAYERS = ['dense_0', 'dense_1']


def fake_run(workdir: str, *, n0: float, temperature: float, values: dict) -> None:
  """A finished, analysed run directory holding `values` (kappa, rho, SR, eff. rank, acc)."""
  os.makedirs(os.path.join(workdir, 'analysis'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'temperature': temperature}, f)
  with open(os.path.join(workdir, run_dir.TRAIN_RESULTS_FILE), 'w') as f:
    json.dump(
      {
        'init/logits_norm': n0,
        'init/temperature': temperature,
        'eval/accuracy': values['accuracy'],
      },
      f,
    )
  analysis = {
    'kappa': values['kappa'],
    'rho': values['rho'],
    'kappa_by_convention': {'paper': values['kappa']},
    'rho_by_convention': {'paper': values['rho']},
    'solution_rank': values['solution_rank'],
    'hidden_layers': LAYERS,
    'id_probe_accuracy': {l: 0.5 for l in LAYERS + ['logits', 'softmax']},
    'representation_effective_rank': {'dense_0': 99.0, 'dense_1': values['effective_rank']},
    'test_accuracy': 0.0,
    'temperature': temperature,
    'ood_detection': {'auroc': values.get('auroc'), 'fpr95_neco': values.get('fpr95_neco')},
  }
  with open(os.path.join(workdir, run_dir.ANALYSIS_DIR, run_dir.ANALYSIS_FILE), 'w') as f:
    json.dump(analysis, f)


def knob_values(x: float, seed: int) -> dict:
  """Every metric a function of the effective norm x = n0 / T alone (plus a seed offset)."""
  lx = np.log10(x)
  return {
    'accuracy': 0.3 + 0.02 * lx + 0.01 * seed,
    'kappa': 0.5 + 0.05 * lx,
    'rho': 0.4 - 0.03 * lx,
    'solution_rank': 9,
    'effective_rank': 20.0 + 3 * lx,
  }


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  out = tmp_path_factory.mktemp('beyond_cpu')
  root = os.path.join(out, 'runs')
  for cell in beyond_knob.cells():
    for seed in range(SEEDS):
      n0 = N0[cell.get('init')] * (1 + 0.1 * seed)
      t = n0 / cell.get('target') if cell.get('target') else cell.temperature
      fake_run(
        grid.workdir(root, cell, seed), n0=n0, temperature=t, values=knob_values(n0 / t, seed)
      )
  loaded = logits_norm_knob.main(['--render_only', f'--seeds={SEEDS}', '--outdir', str(out)])
  return out, loaded


def _csv(out) -> dict[str, dict]:
  with open(out / 'logits_norm_knob.csv') as f:
    return {row['cell']: row for row in csv.DictReader(f)}


def test_every_cell_is_a_valid_config(local_data_dir):
  for smoke in (False, True):
    for cell in beyond_knob.cells(smoke):
      point = runs.point(
        cell.setting, grid.request(cell), cell.temperature, 0, workdir='', data_dir=local_data_dir
      )
      config = experiment.build_config(point)
      validation.validate_config(config, None, 1, create=False)  # raises on a bad field
      assert (config.target_logits_norm > 0) == bool(cell.get('target'))


def test_files_written_from_the_runs(rendered):
  out, loaded = rendered
  assert len(loaded.runs) == len(beyond_knob.cells())
  png = out / 'logits_norm_knob.png'
  assert png.read_bytes()[:4] == b'\x89PNG' and png.stat().st_size < 300_000
  md = (out / 'logits_norm_knob.md').read_text()
  assert 'logits_norm_knob.png' in md and 'kaiming_target0.5' in md
  assert f'x {SEEDS} seed(s)' in md


def test_csv_means_match_the_run_files(rendered):
  out, _ = rendered
  rows = _csv(out)
  n0 = [N0['kaiming'] * (1 + 0.1 * s) for s in range(SEEDS)]
  xs = [n / 100 for n in n0]
  kappa = [knob_values(x, s)['kappa'] for s, x in enumerate(xs)]
  row = rows['kaiming_T100']
  np.testing.assert_allclose(float(row['kappa_mean']), np.mean(kappa), rtol=1e-9)
  np.testing.assert_allclose(float(row['kappa_std']), np.std(kappa, ddof=1), rtol=1e-9)
  np.testing.assert_allclose(float(row['n0_mean']), np.mean(n0), rtol=1e-9)
  acc = [knob_values(x, s)['accuracy'] for s, x in enumerate(xs)]
  np.testing.assert_allclose(float(row['accuracy_mean']), np.mean(acc), rtol=1e-9)


def test_calibrated_cells_sit_at_the_target(rendered):
  out, _ = rendered
  for init in N0:
    row = _csv(out)[f'{init}_target{beyond_knob.TARGET_NORM:g}']
    np.testing.assert_allclose(float(row['x_mean']), beyond_knob.TARGET_NORM, rtol=1e-9)
    np.testing.assert_allclose(
      float(row['temperature_mean']),
      np.mean([N0[init] * (1 + 0.1 * s) for s in range(SEEDS)]) / beyond_knob.TARGET_NORM,
      rtol=1e-9,
    )


def test_one_curve_summary(rendered):
  _, loaded = rendered
  found = beyond_knob.summary(loaded)
  # kappa is a quadratic (here linear) function of log10(n0 / T) alone: R^2 = 1, and the
  # calibrated inits agree exactly.
  assert found['kappa']['r2'] == pytest.approx(1.0)
  assert found['kappa']['spread_target'] == pytest.approx(0.0, abs=1e-12)
  assert found['kappa']['spread_T1'] > 0.05
  assert np.isnan(found['solution_rank']['r2'])  # constant: nothing to explain


def test_one_curve_r2_is_low_when_the_init_decides():
  xs = np.logspace(-3, 1, 40)
  by_init = np.tile([0.0, 1.0], 20)  # alternating inits, unrelated to x
  assert beyond_knob.one_curve_r2(xs, by_init) < 0.2
  assert beyond_knob.one_curve_r2(xs, 2 * np.log10(xs) ** 2 - 1) == pytest.approx(1.0)


def test_render_only_without_runs_is_an_error(tmp_path):
  with pytest.raises(SystemExit, match='no analysed run'):
    logits_norm_knob.main(['--render_only', '--outdir', str(tmp_path)])


def test_smoke_needs_its_own_outdir():
  with pytest.raises(SystemExit):
    logits_norm_knob.main(['--smoke', '--render_only'])


def test_one_curve_r2_of_a_constant_is_undefined():
  xs = np.logspace(-3, 1, 12)
  assert np.isnan(beyond_knob.one_curve_r2(xs, np.full(12, 1 / 9)))  # float noise only
