"""Every registered figure and table renders from synthetic run directories, in seconds."""
import json
import os

import numpy as np
import pytest

from experiments import paper
from experiments.figures import REGISTRY
from rankdeficit import monitor_log

FIGURES = [f'figure_{n}' for n in range(1, 26)]
TABLES = [f'table_{n}' for n in (1, 2, 3, 6, 7, 8, 9)]
LAYERS = ['dense_0', 'dense_1', 'dense_2']
PATHS = LAYERS + ['head']


def _analysis(t: float, seed: int) -> dict:
  """A plausible analysis.json in the integrator's layout; values depend on T and seed."""
  drop = np.log10(t) / 10 + seed / 100
  id_acc = {l: 0.3 + 0.1 * i for i, l in enumerate(LAYERS)}
  id_acc.update(logits=0.5, softmax=0.5)
  ood_acc = {l: 0.8 - drop * i for i, l in enumerate(LAYERS)}
  ood_acc.update(logits=0.5 - drop, softmax=0.4 - drop)
  return {
      'model': 'mlp', 'dataset': 'cifar10_jpeg', 'ood_dataset': 'mnist', 'temperature': t,
      'num_classes': 10, 'layers': LAYERS, 'test_accuracy': 0.4 - drop / 2,
      'id_probe_accuracy': id_acc, 'ood_probe_accuracy': ood_acc,
      'kappa': 0.6 - drop, 'rho': 0.2 + drop,
      'kappa_by_convention': {'paper': 0.6 - drop, 'post_softmax': 0.6, 'hidden': 0.5},
      'rho_by_convention': {'paper': 0.2 + drop, 'post_softmax': 0.3, 'hidden': 0.1},
      'probe_convention': 'paper', 'solution_rank': 10 - int(np.log10(t)),
      'solution_rank_bound': 10, 'post_softmax_rank': 10, 'logits_norm_mean': 5 * t,
      'orthodev': 0.8 - drop, 'orthodev_per_layer': {l: 0.9 - drop * i for i, l in
                                                     enumerate(LAYERS)},
      'ood_detection': {'auroc': 0.6 + drop, 'fpr95_neco': 0.9 - drop, 'ood_dataset': 'mnist'},
      'timings_s': {'total': 1.0},
  }


def _monitor(workdir: str, t: float, seed: int) -> None:
  log = monitor_log.MonitorLog(workdir)
  rng = np.random.default_rng(seed)
  for i, step in enumerate((0, 10, 20)):
    grow = 1 + i * np.log10(10 * t)
    m = {'loss': 2.3 / grow, 'logits_norm': 3.0 * grow, 'logits_norm_per_sample': grow,
         'rank/pre_softmax': 9, 'rank/post_softmax': 10 - i, 'sv/logits': np.linspace(5, 1, 10),
         'alignment_max_mean': 0.2 * grow / (1 + grow)}
    for j, l in enumerate(LAYERS):
      m[f'rank/rep/{l}'] = 64 - 10 * j * i
      m[f'sv/rep/{l}'] = np.sort(rng.uniform(0.1, grow, 15))[::-1]
    for p in PATHS:
      m[f'rank/grad/{p}'] = 10 - i
      m[f'alignment/{p}'] = rng.uniform(0, 1, (15, 15)).astype(np.float32)
      m[f'alignment_max/{p}'] = float(m[f'alignment/{p}'].max())
    log.write(step, m, temperature=t)


def _fake_run(workdir: str, t: float, seed: int) -> None:
  os.makedirs(os.path.join(workdir, 'analysis'), exist_ok=True)
  with open(os.path.join(workdir, 'analysis', 'analysis.json'), 'w') as f:
    json.dump(_analysis(t, seed), f)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'temperature': t, 'seed': seed}, f)
  with open(os.path.join(workdir, 'train_results.json'), 'w') as f:
    json.dump({'init/logits_norm': 0.1 * (seed + 1) * (1 + len(workdir) % 7)}, f)
  _monitor(workdir, t, seed)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  out = tmp_path_factory.mktemp('paper_cpu')
  ctx = paper.make_context(paper.parse_args(['--outdir', str(out)]))
  plan = {}
  for entry in REGISTRY.values():
    plan.update(paper.planned_runs(ctx, entry))
  for workdir, (_, _, t, seed) in plan.items():
    _fake_run(workdir, t, seed)
  os.environ['RANKDEFICIT_QUICK_SYNTHETIC'] = '1'
  try:
    status = paper.main(['--preset=cpu', '--render_only', '--outdir', str(out)])
  finally:
    del os.environ['RANKDEFICIT_QUICK_SYNTHETIC']
  return out, status


def test_every_entry_renders(rendered):
  _, status = rendered
  assert status == {k: 'ok' for k in REGISTRY}


@pytest.mark.parametrize('key', FIGURES)
def test_figure_files_and_caption(rendered, key):
  out, _ = rendered
  png, md = out / f'{key}.png', out / f'{key}.md'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 0 < png.stat().st_size < 300_000
  caption = md.read_text()
  assert f'{key}.png' in caption
  if key not in ('figure_6', 'figure_21'):  # synthetic: no model, no stand-in
    assert 'CPU stand-in for the paper\'s' in caption and 'T = ' in caption


@pytest.mark.parametrize('key', TABLES)
def test_table_files_beside_paper_numbers(rendered, key):
  out, _ = rendered
  md = (out / f'{key}.md').read_text()
  assert (out / f'{key}.csv').stat().st_size > 0
  assert 'CPU stand-in for the paper\'s' in md
  assert 'paper' in md.lower()


def test_table1_uses_the_runs_numbers(rendered):
  out, _ = rendered
  md = (out / 'table_1.md').read_text()
  # kappa of the T=1 MLP runs is 0.6 - 0/10 (seed 0) -> 60%; T=100 -> 0.6 - 0.2 = 40%.
  assert '60%' in md and '40%' in md
  assert '75% / 67% / 9' in md  # the paper's CIFAR-10 / MLP baseline beside it


def test_list_names_every_figure_and_table(capsys):
  paper.main(['--list'])
  text = capsys.readouterr().out
  for key in FIGURES + TABLES:
    assert f'{key} ' in text


def test_unknown_key_is_a_one_line_error(capsys):
  with pytest.raises(SystemExit):
    paper.main(['--only=figure_99'])
  assert 'figure_99' in capsys.readouterr().err


def test_render_only_reports_missing_runs(tmp_path):
  status = paper.main(['--render_only', '--only=figure_3', '--outdir', str(tmp_path)])
  assert status['figure_3'].startswith('missing')
  assert not (tmp_path / 'figure_3.png').exists()


def test_trains_only_the_selected_settings_and_survives_divergence(tmp_path, monkeypatch):
  calls = []

  def fake_ensure_run(workdir, setting, request, t, seed, *, data_dir):
    calls.append((setting.name, t, seed))
    raise FloatingPointError('diverged')

  monkeypatch.setattr(paper, 'ensure_run', fake_ensure_run)
  status = paper.main(['--only=table_1', '--settings=mlp_c10', '--outdir', str(tmp_path)])
  assert sorted(calls) == [('mlp_c10', 1.0, 0), ('mlp_c10', 100.0, 0)]
  assert status['table_1'].startswith('missing')


def test_every_cpu_setting_reads_only_offline_datasets():
  """A CPU run trains for minutes before its analysis reads the OOD sets: each must be one
  that tools.import_data makes offline (vgg19_tin once inherited NECO's 'cifar10')."""
  from experiments.figures import presets, runs  # pylint: disable=import-outside-toplevel
  offline = {'cifar10_jpeg', 'mnist', 'tiny_imagenet32', 'digits', ''}
  for paper_setting, setting in presets.CPU.items():
    config = runs.make_config(setting, runs.Request(paper_setting, (1.0,)), 1.0, 0, None)
    used = {config.dataset, config.ood_dataset, config.ood_detection_dataset}
    assert used <= offline, (setting.name, used - offline)


def test_a_missing_analysis_dataset_stops_before_training(tmp_path):
  from experiments.figures import presets, runs  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  setting = presets.CPU['cifar10/vgg19']
  workdir = tmp_path / 'run'
  with pytest.raises(datasets.DatasetNotFoundError, match='import_data'):
    runs.ensure_run(str(workdir), setting, runs.Request('cifar10/vgg19', (1.0,)), 1.0, 0,
                    data_dir=str(tmp_path / 'empty'))
  assert not (workdir / 'checkpoints').exists()
