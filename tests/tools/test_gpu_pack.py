"""tools/gpu_pack.py at tiny sizes on the CPU, and the paper-budget populations it builds."""

import json
import os
import tarfile

from experiments import table1
from rankdeficit import experiment
from rankdeficit import population_runs
from tools import gpu_pack


def test_tiny_pack_writes_records_runs_and_timings(local_data_dir, tmp_path, capsys):
  out, archive = tmp_path / 'table1_paper_gpu', tmp_path / 'pack.tar.gz'
  gpu_pack.main(
    [
      '--tiny',
      '--seeds=1',
      '--inits=kaiming',
      '--no_resnet',
      f'--data_dir={local_data_dir}',
      f'--out={out}',
      f'--runs_dir={tmp_path / "runs"}',
      f'--archive={archive}',
    ]
  )
  assert 'mlp_c10_kaiming: 2 members x 8 steps' in capsys.readouterr().out
  runs = [json.loads(line) for line in (out / 'runs.jsonl').read_text().splitlines()]
  assert [(r['experiment'], r['temperature']) for r in runs] == [
    ('mlp_c10_kaiming', 1.0),
    ('mlp_c10_kaiming', 100.0),
  ]
  assert set(runs[0]) == set(table1.RUN_FIELDS) and runs[0]['kappa'] is not None
  for name in ('mlp_c10_kaiming_T1_s0', 'mlp_c10_kaiming_T100_s0'):
    assert (out / 'records' / name / 'analysis' / 'analysis.json').exists()
    assert (out / 'records' / name / 'scalars.json').exists()
  assert not any('checkpoints' in dirs for _, dirs, _ in os.walk(out))  # records only
  summary = json.loads((out / 'gpu_pack.json').read_text())
  [population] = summary['populations']
  assert population['members'] == 2 and population['steps'] == 8
  assert population['flops_per_step'] > 0 and 0 < population['mfu'] < 1
  assert summary['peak_flops'] == 989e12 and summary['stopped'] is None
  assert len(summary['analyses']) == 2 and (out / 'table1.md').exists()
  with tarfile.open(archive) as tar:
    assert 'table1_paper_gpu/runs.jsonl' in tar.getnames()


def test_paper_budget_populations_and_a_spent_budget(tmp_path):
  args = gpu_pack._parser().parse_args(  # pylint: disable=protected-access
    ['--data_dir=data/tfds', f'--out={tmp_path / "out"}', f'--runs_dir={tmp_path / "runs"}']
  )
  groups = gpu_pack.groups(args)
  assert [g.experiment.name for g in groups] == [
    'mlp_c10_pytorch',
    'mlp_c10_kaiming',
    'resnet18_c10',
  ]
  points = [gpu_pack._points(g, args) for g in groups]  # pylint: disable=protected-access
  assert [len(p) for p in points] == [6, 6, 2]
  for group_points in points:
    population_runs.check_group(group_points)  # one population each
  mlp = experiment.build_config(points[0][0])
  assert (mlp.model.width, mlp.model.depth, mlp.model.init) == (2048, 7, 'pytorch')
  assert (mlp.num_epochs, mlp.train_subset, mlp.augment, mlp.batch_size) == (100, 0, 'cifar', 128)
  assert mlp.input_on_device and mlp.steps_per_dispatch == 390 and mlp.dataset == 'cifar10_jpeg'
  resnet = experiment.build_config(points[2][1])
  assert (resnet.model.name, resnet.num_epochs, resnet.lr_milestones) == (
    'resnet18',
    164,
    (82, 123),
  )
  assert (resnet.temperature, resnet.seed) == (100.0, 0)
  args.budget_s = 0  # nothing fits: nothing starts, the summary says so
  summary = gpu_pack.run(args)
  assert summary['populations'] == [] and summary['stopped']
  assert not (tmp_path / 'runs').exists()
