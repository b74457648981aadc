"""The attention-temperature experiment renders its figure and tables from run folders alone,
and its table holds the run files' numbers (seed mean / sample std)."""

import csv
import json
import os

import numpy as np
import pytest

from experiments import attention_temperature as exp
from experiments.figures import beyond_attention
from experiments.figures import runs
from rankdeficit import experiment
from rankdeficit.run import run_dir
from rankdeficit.training import monitor_log

BLOCKS = ('block_0', 'block_1')
STEPS = (0, 5, 10)
SEEDS = 2
MISSING = (4.0, 100.0)  # no run at all
ONE_SEED = (0.25, 1.0)  # seed 1 did not finish


def _value(stat: str, tau: float, t: float, seed: int, block: int, step: int) -> float:
  """A distinct, deterministic value per (stat, tau, T, seed, block, step)."""
  base = {'rank': 40.0, 'effective_rank': 20.0, 'entropy': 3.0, 'logits_norm': 2.0}[stat]
  return base * (1 + 0.1 * np.log2(tau)) + 0.01 * t + 0.3 * seed + block + 0.05 * step


def _fake_run(workdir: str, tau: float, t: float, seed: int) -> dict:
  """Writes a finished, analysed run; returns its per-run truth."""
  os.makedirs(os.path.join(workdir, 'analysis'), exist_ok=True)
  acc, kappa, rho = 0.4 + 0.01 * seed - 0.02 * tau, 0.5 + 0.03 * seed, 0.2 + 0.001 * t
  analysis = {
    'kappa': 0.99,
    'rho': 0.99,  # default convention: must not be what is read
    'kappa_by_convention': {'paper': kappa, 'hidden': 0.1},
    'rho_by_convention': {'paper': rho, 'hidden': 0.1},
    'num_examples': {'id_test': 200},
    'probe_config': {'epochs': 2, 'batch_size': 128, 'max_dims': 256},
  }
  with open(os.path.join(workdir, 'analysis', 'analysis.json'), 'w') as f:
    json.dump(analysis, f)
  config = experiment.build_config(
    runs.point(exp.FULL, exp.request(tau, (t,)), t, seed, workdir=workdir)
  )
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  with open(os.path.join(workdir, run_dir.TRAIN_RESULTS_FILE), 'w') as f:
    json.dump({'eval/accuracy': acc}, f)
  log = monitor_log.MonitorLog(workdir)
  for step in STEPS:
    log.write(
      step,
      {
        f'attention/{stat}/{b}': _value(stat, tau, t, seed, i, step)
        for stat in beyond_attention.STATS
        for i, b in enumerate(BLOCKS)
      },
      temperature=t,
    )
  return {'test_accuracy': acc, 'kappa': kappa, 'rho': rho}


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('beyond_cpu'))
  args = exp.parse_args(['--outdir', out, f'--seeds={SEEDS}'])
  truth = {}
  for workdir, req, t, seed in exp.plan(args):
    tau = dict(req.overrides)['model.attention_temperature']
    if (tau, t) == MISSING or ((tau, t) == ONE_SEED and seed == 1):
      continue
    truth.setdefault((tau, t), []).append(_fake_run(workdir, tau, t, seed))
  status = exp.main(['--render_only', '--outdir', out, f'--seeds={SEEDS}'])
  return out, truth, status


def test_outputs_are_written(rendered):
  out, _, status = rendered
  assert status == 0
  png = os.path.join(out, 'attention_temperature.png')
  assert 0 < os.path.getsize(png) < 300_000
  with open(png, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def _csv(out):
  with open(os.path.join(out, 'attention_temperature.csv')) as f:
    return list(csv.DictReader(f))


def test_table_matches_run_files(rendered):
  out, truth, _ = rendered
  rows = _csv(out)
  assert len(rows) == len(truth) * len(BLOCKS)  # the missing configuration has no row
  for row in rows:
    tau, t = float(row['tau']), float(row['temperature'])
    per_seed = truth[(tau, t)]
    assert int(row['seeds']) == len(per_seed)
    ddof = 1 if len(per_seed) > 1 else 0
    for name in ('test_accuracy', 'kappa', 'rho'):
      v = np.array([r[name] for r in per_seed], np.float64)
      np.testing.assert_allclose(float(row[f'{name}_mean']), v.mean(), rtol=1e-9)
      np.testing.assert_allclose(float(row[f'{name}_std']), v.std(ddof=ddof), atol=1e-12)
    block = BLOCKS.index(row['layer'])
    for stat in beyond_attention.STATS:  # "final" = the last monitor record
      v = np.array([_value(stat, tau, t, s, block, STEPS[-1]) for s in range(len(per_seed))])
      np.testing.assert_allclose(float(row[f'{stat}_mean']), v.mean(), rtol=1e-6)
      np.testing.assert_allclose(float(row[f'{stat}_std']), v.std(ddof=ddof), atol=1e-6)


def test_caption_states_setup_tables_and_gaps(rendered):
  out, truth, _ = rendered
  with open(os.path.join(out, 'attention_temperature.md')) as f:
    text = f.read()
  assert '![attention_temperature](attention_temperature.png)' in text
  assert 'Not finished (left out): (tau 4, T 100)' in text
  assert 'vit_mini (patch 4, width 64, depth 4, 4 heads' in text
  assert 'steps of batch 64 (adam, lr 0.001' in text
  assert 'Dong et al. (2021)' in text and 'Zhai et al. (2023)' in text
  acc = np.mean([r['test_accuracy'] for r in truth[(1.0, 100.0)]])
  assert f'| 1 | 100 | 2 | {100 * acc:.1f} ± ' in text
  assert '| 0.25 | 1 | block_1 |' in text


def test_curves_use_every_step_and_seed():
  run_a, run_b = (_history(seed) for seed in (0, 1))
  steps, mean, std = beyond_attention.series([run_a, run_b], 'attention/rank/block_0')
  want = np.array([[_value('rank', 1, 1, s, 0, st) for st in STEPS] for s in (0, 1)])
  np.testing.assert_array_equal(steps, STEPS)
  np.testing.assert_allclose(mean, want.mean(0), rtol=1e-9)
  np.testing.assert_allclose(std, want.std(0, ddof=1), atol=1e-9)


def _history(seed):
  records = [
    {'step': st, 'attention/rank/block_0': _value('rank', 1, 1, seed, 0, st)} for st in STEPS
  ]
  return runs.Run('', 1.0, seed, {}, {}, None, monitor_log.MonitorHistory(None, records))


def test_render_only_without_runs_reports_missing(tmp_path, capsys):
  assert exp.main(['--render_only', '--outdir', str(tmp_path)]) == 1
  assert 'missing' in capsys.readouterr().out
  assert not os.path.exists(tmp_path / 'attention_temperature.png')


def test_plan_and_configs():
  args = exp.parse_args(['--outdir', 'o', '--seeds=2'])
  plan = exp.plan(args)
  assert len(plan) == 2 * len(exp.TAUS) * len(exp.TEMPERATURES)
  assert [p[3] for p in plan[:6]] == [0] * 6  # seed-major
  assert plan[0][0] == os.path.join('o', 'runs', 'vit_c10-tau0.25', 'T1_s0')
  assert args.compilation_cache == os.path.join('o', 'runs', 'jax_cache')
  quick = exp.plan(exp.parse_args(['--outdir', 'o', '--quick']))
  assert not {p[0] for p in quick} & {p[0] for p in plan}  # smoke runs never count as results
  config = experiment.build_config(
    runs.point(exp.FULL, exp.request(4.0, (100.0,)), 100.0, 1, workdir='o')
  )
  assert config.model.attention_temperature == 4.0 and config.temperature == 100.0
  assert config.seed == 1 and config.model.name == 'vit_mini'


@pytest.mark.parametrize('argv', [['--seeds=0'], ['--taus=0,1'], ['--temperatures=']])
def test_bad_arguments_are_rejected(argv):
  with pytest.raises(SystemExit):
    exp.parse_args(argv)


def test_list_counts_runs_left(rendered, capsys):
  out, truth, _ = rendered
  assert exp.main(['--list', '--outdir', out, f'--seeds={SEEDS}']) == 0
  done = sum(len(v) for v in truth.values())
  total = SEEDS * len(exp.TAUS) * len(exp.TEMPERATURES)
  text = capsys.readouterr().out
  assert text.startswith(f'{total} runs (') and f'; {total - done} to train or analyse' in text
