"""End-to-end test of rankdeficit.analyze on a tiny real-data run (CIFAR-10 JPEG -> MNIST)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rankdeficit import analyze
from rankdeficit.analysis import probes
from rankdeficit.analysis.config import AnalysisConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny_run(local_data_dir, tmp_path_factory):
  from configs import mlp_c10_cpu  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  config = mlp_c10_cpu.get_config()
  config.data_dir = local_data_dir
  config.model.width = 32
  config.model.depth = 3
  config.train_subset = 0
  config.num_train_steps = 10
  config.batch_size = 100
  config.eval_every_steps = 10
  config.metrics_every_steps = 0
  config.ood_detection_dataset = 'tiny_imagenet32'  # near-OOD detection, MNIST probes
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return workdir


def test_analyze_run_end_to_end(tiny_run):
  a = analyze.analyze_run(
    tiny_run,
    AnalysisConfig.from_overrides(
      {'max_examples': 400, 'probe_epochs': 3, 'probe_batch_size': 256}
    ),
  )
  hidden = ['dense_0', 'dense_1', 'dense_2']
  layers = hidden + ['logits', 'softmax']  # the final layer pre- and post-softmax (A.5)
  assert a['hidden_layers'] == hidden and a['layers'] == layers
  assert a['num_examples'] == {'id_train': 400, 'id_test': 400, 'ood_train': 400, 'ood_test': 400}
  for key in (
    'id_probe_accuracy',
    'ood_probe_accuracy',
    'representation_rank',
    'representation_effective_rank',
  ):
    assert list(a[key]) == layers
  assert list(a['orthodev_per_layer']) == hidden
  assert all(0 <= v <= 1 for v in a['id_probe_accuracy'].values())
  assert a['feature_dims']['logits'] == a['feature_dims']['softmax'] == [10, 10]
  # kappa / rho under the three conventions, recomputed from the per-layer accuracies.
  assert a['probe_convention'] == 'paper'
  assert (
    set(a['kappa_by_convention'])
    == set(a['rho_by_convention'])
    == {'paper', 'post_softmax', 'hidden'}
  )
  id_acc, ood_acc = a['id_probe_accuracy'], a['ood_probe_accuracy']
  for conv, last in (('paper', 'logits'), ('post_softmax', 'softmax'), ('hidden', None)):
    names = hidden + ([last] if last else [])
    assert a['kappa_by_convention'][conv] == probes.effective_depth([id_acc[l] for l in names])
    assert a['rho_by_convention'][conv] == pytest.approx(
      probes.ood_generalization_loss([ood_acc[l] for l in names])
    )
  assert a['kappa'] == a['kappa_by_convention']['paper'] in (0.25, 0.5, 0.75, 1.0)
  assert a['rho'] == a['rho_by_convention']['paper'] and 0 <= a['rho'] <= 1
  # The rank of the post-softmax layer is the post-softmax rank on the same examples.
  assert a['representation_rank']['softmax'] == a['post_softmax_rank']
  assert a['representation_rank']['logits'] == a['solution_rank']
  assert 1 <= a['solution_rank'] <= a['solution_rank_bound'] == 10
  assert 1 <= a['post_softmax_rank'] <= 10
  assert a['logits_norm_frobenius'] > 0 and a['logits_norm_mean'] > 0
  assert all(1 <= r <= 32 for r in a['representation_rank'].values())
  assert {'nc1', 'nc3', 'nc4'} <= set(a['neural_collapse'])
  det = a['ood_detection']
  assert det['ood_dataset'] == 'tiny_imagenet32'
  assert det['method'] == 'neco' and 0 <= det['auroc'] <= 1 and 0 <= det['fpr95_neco'] <= 1
  assert 'ID positive' in det['fpr95_neco_convention']
  assert a['timings_s']['total'] > 0
  out = os.path.join(tiny_run, 'analysis')
  for name in ('analysis.json', 'analysis.md', 'probe_accuracy.png', 'representation_rank.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, 'analysis.json')) as f:
    saved = json.load(f)
  assert saved['solution_rank'] == a['solution_rank']
  assert np.isclose(saved['kappa'], a['kappa'])
  md = open(os.path.join(out, 'analysis.md')).read()
  assert '| dense_2 |' in md and '| softmax |' in md and 'post_softmax convention' in md


def test_plan_layer_groups_packs_consecutive_layers_within_the_budget():
  from rankdeficit.analysis import memory_plan  # pylint: disable=import-outside-toplevel

  widths = {'a': 10, 'b': 10, 'c': 30, 'd': 5, 'e': 5}
  # 4 bytes x 100 rows per coordinate: a layer of 10 coordinates takes 4,000 bytes.
  plan = memory_plan.plan_layer_groups(widths, 100, 8_000)
  assert plan == [['a', 'b'], ['c'], ['d', 'e']]  # 'c' alone exceeds the budget
  assert memory_plan.plan_layer_groups(widths, 100, 0) == [list(widths)]
  assert memory_plan.plan_layer_groups(widths, 100, 1) == [[l] for l in widths]


def test_split_rows_count_every_split_the_extraction_reads(local_data_dir):
  import ml_collections  # pylint: disable=import-outside-toplevel

  from rankdeficit.analysis import memory_plan  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict(
    {
      'dataset': 'cifar10_jpeg',
      'ood_dataset': 'mnist',
      'ood_detection_dataset': 'tiny_imagenet32',
      'data_dir': local_data_dir,
    }
  )
  rows = memory_plan.split_rows(config, max_examples=300, max_train_examples=None)
  assert rows == {
    'id_test': 300,
    'id_train': 300,
    'ood_test': 300,
    'ood_train': 300,
    'det_test': 300,
  }
  rows = memory_plan.split_rows(config, max_examples=None, max_train_examples=600)
  assert rows == {
    'id_test': 500,
    'id_train': 600,
    'ood_test': 500,
    'ood_train': 600,
    'det_test': 500,
  }


def test_timer_accumulates_a_stage_timed_twice():
  from rankdeficit.analysis import timing  # pylint: disable=import-outside-toplevel

  timer = timing.Timer()
  for _ in range(2):
    with timer('extract_id_test'):
      pass
  with pytest.raises(RuntimeError):
    with timer('probes'):
      raise RuntimeError('a failing stage is timed too')
  assert list(timer.timings) == ['extract_id_test', 'probes']
  assert all(v >= 0 for v in timer.timings.values())


def test_grouped_analysis_equals_one_pass(tiny_run):
  # A budget below one layer's features forces one extraction pass per layer.
  opts = AnalysisConfig.from_overrides(
    {
      'max_examples': 300,
      'probe_epochs': 2,
      'probe_batch_size': 128,
      'plots': False,
      'write': False,
    }
  )
  one = analyze.analyze_run(tiny_run, opts.replace(max_feature_gib=0))
  per_layer = analyze.analyze_run(tiny_run, opts.replace(max_feature_gib=1e-9))
  assert one['layer_groups'] == [['dense_0', 'dense_1', 'dense_2']]
  assert per_layer['layer_groups'] == [['dense_0'], ['dense_1'], ['dense_2']]
  for key in (
    'id_probe_accuracy',
    'ood_probe_accuracy',
    'representation_rank',
    'representation_effective_rank',
    'orthodev_per_layer',
    'kappa_by_convention',
    'rho_by_convention',
    'neural_collapse',
    'ood_detection',
    'solution_rank',
    'logits_norm_mean',
    'num_examples',
    'feature_dims',
    'layers',
  ):
    a, b = one[key], per_layer[key]
    if isinstance(a, dict):
      assert list(a) == list(b), key
      for k in a:
        if isinstance(a[k], float):
          assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (key, k)
        else:
          assert b[k] == a[k], (key, k)
    elif isinstance(a, float):
      assert b == pytest.approx(a, rel=1e-5), key
    else:
      assert b == a, key


def test_analyze_cli_without_ood(tiny_run):
  cmd = [
    sys.executable,
    '-m',
    'rankdeficit.analyze',
    f'--workdir={tiny_run}',
    '--ood_dataset=',
    '--max_examples=200',
    '--probe_epochs=1',
  ]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'SR (solution rank)' in proc.stdout
  with open(os.path.join(tiny_run, 'analysis', 'analysis.json')) as f:
    a = json.load(f)
  assert a['rho'] is None and 'ood_detection' not in a and a['ood_dataset'] == ''


def test_reproduce_table1_aggregation(tmp_path):
  from experiments import reproduce_table1 as rt  # pylint: disable=import-outside-toplevel
  from experiments import table1_presets  # pylint: disable=import-outside-toplevel

  recs = []
  for temp, kappas in ((1.0, (0.75, 0.875)), (100.0, (0.375, 0.5))):
    for seed, k in enumerate(kappas):
      recs.append(
        {
          'experiment': 'mlp_c10',
          'label': 'MLP',
          'paper': 'CIFAR-10 / MLP',
          'temperature': temp,
          'seed': seed,
          'kappa': k,
          'rho': 0.5,
          'kappa_paper': k,
          'kappa_hidden': 1.0,
          'rho_paper': 0.5,
          'solution_rank': 9 + seed,
          'num_classes': 10,
          'solution_rank_bound': 10,
          'neco_auroc': None,
        }
      )
  rows = rt.aggregate(recs)
  assert [r['temperature'] for r in rows] == [1.0, 100.0]
  assert rows[0]['kappa_mean'] == pytest.approx(0.8125)
  assert rows[0]['kappa_std'] == pytest.approx(np.std([0.75, 0.875], ddof=1))
  assert rows[1]['solution_rank_mean'] == pytest.approx(9.5)
  assert rows[0]['neco_auroc_mean'] is None
  rt.write_tables(rows, str(tmp_path), 'test')
  md = (tmp_path / 'table1.md').read_text()
  assert '75% / 67% / 9' in md and '38% / 78% / 9' in md and '81% ± 9' in md
  assert 'kappa (paper conv.)' in md and 'kappa (hidden)' in md and 'rho (post_softmax)' in md
  assert rows[0]['kappa_hidden_mean'] == 1.0 and rows[0]['rho_post_softmax_n'] == 0
  csv_text = (tmp_path / 'table1.csv').read_text().splitlines()
  assert len(csv_text) == 3 and 'paper_kappa' in csv_text[0]
  # every preset names existing configs and valid override keys
  for preset in table1_presets.PRESETS.values():
    for exp in preset['experiments']:
      for temp in exp.temperatures:
        config = rt.make_config(exp, temp, 0, None)
        assert config.temperature == temp


def test_attention_step_reports_every_attention_layer(local_data_dir):
  from configs import mlp_c10_cpu  # pylint: disable=import-outside-toplevel
  from rankdeficit import models  # pylint: disable=import-outside-toplevel

  config = mlp_c10_cpu.get_config()
  config.data_dir, config.model.name, config.model.attention_temperature = (
    local_data_dir,
    'vit_tiny',
    0.5,
  )
  model = models.create_model(config.model, 10)
  variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  att = analyze.attention_metrics(config, model, variables, num_examples=16)
  assert list(att) == [f'block_{i}' for i in range(4)]
  for stats in att.values():
    assert 1 <= stats['rank'] <= 65  # 8x8 patches + class token
    assert 0 <= stats['entropy'] <= np.log(65) + 1e-6
    assert stats['logits_norm'] > 0 and len(stats['per_head']['rank']) == 4


@pytest.mark.parametrize(
  'case', ['no_dir', 'no_config', 'bad_json', 'bad_temperature', 'no_checkpoint']
)
def test_analyze_cli_refuses_bad_run_directories(tmp_path, case):
  workdir = tmp_path / 'run'
  if case != 'no_dir':
    workdir.mkdir()
  if case == 'bad_json':
    (workdir / 'config.json').write_text('{"temperature": ')
  elif case in ('bad_temperature', 'no_checkpoint'):
    temperature = -5 if case == 'bad_temperature' else 1.0
    (workdir / 'config.json').write_text(json.dumps({'temperature': temperature}))
  before = sorted(tmp_path.rglob('*'))
  with pytest.raises(ValueError) as e:
    analyze.check_analyzable(str(workdir))
  assert sorted(tmp_path.rglob('*')) == before  # nothing written
  message = str(e.value)
  assert '\n' not in message
  expected = {
    'no_dir': 'config.json',
    'no_config': 'config.json',
    'bad_json': 'JSON',
    'bad_temperature': 'temperature=-5',
    'no_checkpoint': 'No checkpoint',
  }[case]
  assert expected in message


def test_analyze_cli_bad_workdir_is_one_line(tmp_path):
  cmd = [sys.executable, '-m', 'rankdeficit.analyze', f'--workdir={tmp_path / "nothing"}']
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'Traceback' not in proc.stderr and not (tmp_path / 'nothing').exists()


def test_reproduce_reuses_points_recorded_in_runs_jsonl(tmp_path):
  # A later session has runs.jsonl (committed) but not the run directories: nothing retrains.
  from experiments import reproduce_table1 as rt  # pylint: disable=import-outside-toplevel

  lines = [
    json.dumps(
      {
        'experiment': 'mlp_c10',
        'temperature': t,
        'seed': 0,
        'label': 'MLP',
        'paper': 'CIFAR-10 / MLP',
        'kappa': 0.5,
        'rho': r,
        'kappa_by_convention': {'paper': 0.5, 'post_softmax': 0.25, 'hidden': 1.0},
        'rho_by_convention': {'paper': r, 'post_softmax': r, 'hidden': 0.0},
        'id_probe_accuracy': {'dense_0': 0.5, 'logits': r},
      }
    )
    for t, r in ((1.0, 0.25), (100.0, 0.5))
  ]
  (tmp_path / 'runs.jsonl').write_text('\n'.join(lines) + '\n')
  rows = rt.reproduce('smoke', outdir=str(tmp_path), data_dir=str(tmp_path / 'no_data'))
  assert not (tmp_path / 'runs').exists()
  assert [r['rho_mean'] for r in rows] == [0.25, 0.5]
  assert rows[0]['kappa_hidden_mean'] == 1.0
  assert len((tmp_path / 'runs.jsonl').read_text().splitlines()) == 2
  assert (tmp_path / 'probe_profiles.png').stat().st_size > 0  # drawn from runs.jsonl


def test_reproduce_with_a_subset_keeps_every_recorded_point(tmp_path):
  # --seeds=1 (or --only / --temperatures) must not drop other recorded points from
  # runs.jsonl or the table; a point of an experiment the preset no longer has is dropped.
  from experiments import reproduce_table1 as rt  # pylint: disable=import-outside-toplevel

  lines = [
    json.dumps(
      {
        'experiment': exp,
        'temperature': t,
        'seed': seed,
        'label': 'MLP',
        'paper': 'CIFAR-10 / MLP',
        'kappa': 0.5,
        'rho': 0.1 * (seed + 1),
      }
    )
    for exp, t, seed in (
      ('mlp_c10', 1.0, 1),
      ('retired', 1.0, 0),
      ('mlp_c10', 1.0, 0),
      ('mlp_c10', 100.0, 0),
    )
  ]
  (tmp_path / 'runs.jsonl').write_text('\n'.join(lines) + '\n')
  rows = rt.reproduce('smoke', seeds=1, outdir=str(tmp_path), data_dir=str(tmp_path / 'no_data'))
  kept = [json.loads(line) for line in (tmp_path / 'runs.jsonl').read_text().splitlines()]
  assert [(r['experiment'], r['temperature'], r['seed']) for r in kept] == [
    ('mlp_c10', 1.0, 0),
    ('mlp_c10', 100.0, 0),
    ('mlp_c10', 1.0, 1),
  ]
  assert [(r['temperature'], r['seeds']) for r in rows] == [(1.0, 2), (100.0, 1)]
  assert rows[0]['rho_mean'] == pytest.approx(0.15)
  assert not (tmp_path / 'probe_profiles.png').exists()  # no run has probes to draw


def test_reproduce_keeps_points_another_call_records_meanwhile(tmp_path, monkeypatch):
  # Two calls on one outdir side by side (say --temperatures=1 and --temperatures=100): each
  # writes runs.jsonl after every point and must keep what the other wrote since it started.
  from experiments import reproduce_table1 as rt  # pylint: disable=import-outside-toplevel

  def record(exp, temperature, seed):
    return {
      'experiment': exp,
      'temperature': temperature,
      'seed': seed,
      'label': 'MLP',
      'paper': 'CIFAR-10 / MLP',
      'kappa': 0.5,
      'rho': 0.25,
    }

  def run_one(exp, temperature, seed, **_):
    other = record(exp.name, 100.0, seed)  # the other call finishes its point first
    with open(tmp_path / 'runs.jsonl', 'a') as f:
      f.write(json.dumps(other) + '\n')
    return record(exp.name, float(temperature), seed)

  monkeypatch.setattr(rt, 'run_one', run_one)
  rt.reproduce('smoke', seeds=1, outdir=str(tmp_path), temperatures=[1.0])
  kept = [json.loads(line) for line in (tmp_path / 'runs.jsonl').read_text().splitlines()]
  assert [(r['temperature'], r['seed']) for r in kept] == [(1.0, 0), (100.0, 0)]


@pytest.mark.parametrize(
  'schedule,expected', [('constant', 100.0), ('cosine', 1.0), ('step', 1.0), ('linear', 1.0)]
)
def test_an_annealed_run_is_analysed_at_its_final_temperature(schedule, expected):
  from rankdeficit.plan import run_plan  # pylint: disable=import-outside-toplevel

  assert run_plan.TemperatureSchedule(schedule, 100.0, 1.0, 10, (5,)).final == expected


def test_analysis_config_from_flat_overrides():
  from rankdeficit.analysis import config as analysis_config  # pylint: disable=import-outside-toplevel

  config = AnalysisConfig.from_overrides({'max_train_examples': 10_000, 'probe_epochs': 2})
  assert config.max_train_examples == 10_000 and config.max_examples is None
  assert config.probe == probes.ProbeConfig(num_epochs=2)  # the other probe defaults kept
  assert config.overrides() == {'max_train_examples': 10_000, 'probe_epochs': 2}
  assert AnalysisConfig.from_overrides(config.flat()) == config
  assert config.replace(probe_lr=0.1).probe.learning_rate == 0.1
  with pytest.raises(ValueError, match=r"Unknown analysis option\(s\) 'probe_epoch'; known: "):
    AnalysisConfig.from_overrides({'probe_epoch': 2})
  # One flag per option, the defaults the dataclasses' (the probe ones: ProbeConfig's).
  fv = analysis_config.flags.FlagValues()
  analysis_config.define_flags(fv)
  fv(['analyze', '--ood_dataset=', '--probe_epochs=7', '--max_feature_gib=0.5', '--noplots'])
  config = analysis_config.from_flags(fv)
  assert config == AnalysisConfig.from_overrides(
    {'ood_dataset': '', 'probe_epochs': 7, 'max_feature_gib': 0.5, 'plots': False}
  )
  defaults = {name: fv[name].default for name in analysis_config.flat_keys()}
  assert defaults == AnalysisConfig().flat()
  assert defaults['probe_epochs'] == probes.ProbeConfig().num_epochs
  for name in (
    'ood_dataset',
    'data_dir',
    'max_examples',
    'max_train_examples',
    'probe_epochs',
    'probe_batch_size',
    'max_dims',
    'neco_dim',
    'step',
    'seed',
    'max_feature_gib',
  ):
    assert name in fv, name
