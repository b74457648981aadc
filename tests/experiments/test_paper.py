"""Every registered figure and table renders from synthetic run directories, in seconds."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from experiments import paper
from experiments import records
from experiments.figures import REGISTRY
from experiments.figures import runs as runs_lib
from experiments.figures import verdicts
from rankdeficit import experiment
from rankdeficit.run import workdir_lock
from rankdeficit.training import monitor_log

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
    'model': 'mlp',
    'dataset': 'cifar10_jpeg',
    'ood_dataset': 'mnist',
    'temperature': t,
    'num_classes': 10,
    'layers': LAYERS,
    'test_accuracy': 0.4 - drop / 2,
    'id_probe_accuracy': id_acc,
    'ood_probe_accuracy': ood_acc,
    'kappa': 0.6 - drop,
    'rho': 0.2 + drop,
    'kappa_by_convention': {'paper': 0.6 - drop, 'post_softmax': 0.6, 'hidden': 0.5},
    'rho_by_convention': {'paper': 0.2 + drop, 'post_softmax': 0.3, 'hidden': 0.1},
    'probe_convention': 'paper',
    'solution_rank': 10 - int(np.log10(t)),
    'solution_rank_bound': 10,
    'post_softmax_rank': 10,
    'logits_norm_mean': 5 * t,
    'orthodev': 0.8 - drop,
    'orthodev_per_layer': {l: 0.9 - drop * i for i, l in enumerate(LAYERS)},
    'ood_detection': {'auroc': 0.6 + drop, 'fpr95_neco': 0.9 - drop, 'ood_dataset': 'mnist'},
    'timings_s': {'total': 1.0},
  }


def _monitor(workdir: str, t: float, seed: int) -> None:
  log = monitor_log.MonitorLog(workdir)
  rng = np.random.default_rng(seed)
  for i, step in enumerate((0, 10, 20)):
    grow = 1 + i * np.log10(10 * t)
    m = {
      'loss': 2.3 / grow,
      'logits_norm': 3.0 * grow,
      'logits_norm_per_sample': grow,
      'rank/pre_softmax': 9,
      'rank/post_softmax': 10 - i,
      'sv/logits': np.linspace(5, 1, 10),
      'alignment_max_mean': 0.2 * grow / (1 + grow),
    }
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


def _results_of(out) -> list[str]:
  """The fake runs of `TrainedBy` settings live under `out` too (never the repository's)."""
  return ['--results_dir', os.path.join(str(out), 'results')]


def _fake_runs(out, *, records_too: bool = False):
  """Fake runs of every entry of the cpu preset under `out` (and their records)."""
  ctx = paper.make_context(paper.parse_args(['--outdir', str(out), *_results_of(out)]))
  plan = {}
  for entry in REGISTRY.values():
    for request in entry.requests:
      plan.update({workdir: (t, s, record) for t, s, workdir, record in ctx.locations(request)})
  for workdir, (t, seed, record) in plan.items():
    _fake_run(workdir, t, seed)
    if records_too:
      records.write_record(workdir, record)
  return ctx


def _render_only(out, *flags) -> dict[str, str]:
  os.environ['RANKDEFICIT_QUICK_SYNTHETIC'] = '1'
  try:
    return paper.main(
      ['--preset=cpu', '--render_only', '--outdir', str(out), *_results_of(out), *flags]
    )
  finally:
    del os.environ['RANKDEFICIT_QUICK_SYNTHETIC']


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  out = tmp_path_factory.mktemp('paper_cpu')
  _fake_runs(out)
  return out, _render_only(out)


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
    assert "CPU stand-in for the paper's" in caption and 'T = ' in caption


@pytest.mark.parametrize('key', TABLES)
def test_table_files_beside_paper_numbers(rendered, key):
  out, _ = rendered
  md = (out / f'{key}.md').read_text()
  assert (out / f'{key}.csv').stat().st_size > 0
  assert "CPU stand-in for the paper's" in md
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

  def fake_run_point(point, **_):  # <runs_dir>/<setting name>/T<T>_s<seed>
    setting = os.path.basename(os.path.dirname(point.workdir))
    calls.append((setting, point.overrides['temperature'], point.overrides['seed']))
    raise FloatingPointError('diverged')

  monkeypatch.setattr(experiment, 'run_point', fake_run_point)
  status = paper.main(['--only=table_1', '--settings=mlp_tin', '--outdir', str(tmp_path)])
  assert sorted(calls) == [('mlp_tin', 1.0, 0), ('mlp_tin', 100.0, 0)]
  assert status['table_1'].startswith('missing')


def test_trained_by_settings_are_read_never_trained(tmp_path, monkeypatch):
  """Figure 3 draws the factor study's trained MLP: paper.py never trains it, and says how."""
  calls = []
  monkeypatch.setattr(experiment, 'run_point', lambda point, **_: calls.append(point))
  status = paper.main(['--only=figure_3', '--outdir', str(tmp_path)])
  assert calls == []
  assert 'reproduce_table1 --preset=factors_cpu' in status['figure_3']


def test_a_record_never_replaces_its_own_run(tmp_path):
  run_dir = str(tmp_path / 'run')
  _fake_run(run_dir, 1.0, 0)
  for dest in (run_dir, str(tmp_path), os.path.join(run_dir, 'record')):
    with pytest.raises(ValueError, match='overlaps'):
      records.write_record(run_dir, dest)
  assert os.path.exists(os.path.join(run_dir, 'config.json'))


def test_every_cpu_setting_reads_only_offline_datasets():
  """A CPU run trains for minutes before its analysis reads the OOD sets: each must be one
  that tools.import_data makes offline (vgg19_tin once inherited NECO's 'cifar10')."""
  from experiments.figures import presets  # pylint: disable=import-outside-toplevel
  from experiments.figures import runs  # pylint: disable=import-outside-toplevel

  offline = {'cifar10_jpeg', 'mnist', 'tiny_imagenet32', 'digits', ''}
  for paper_setting, setting in presets.CPU.items():
    point = runs.point(setting, runs.Request(paper_setting, (1.0,)), 1.0, 0, workdir='')
    config = experiment.build_config(point)
    used = {config.dataset, config.ood_dataset, config.ood_detection_dataset}
    assert used <= offline, (setting.name, used - offline)


def test_a_missing_analysis_dataset_stops_before_training(tmp_path):
  from experiments.figures import presets  # pylint: disable=import-outside-toplevel
  from experiments.figures import runs  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  setting = presets.CPU['cifar10/vgg19']
  workdir = tmp_path / 'run'
  with pytest.raises(datasets.DatasetNotFoundError, match='import_data'):
    experiment.run_point(
      runs.point(
        setting,
        runs.Request('cifar10/vgg19', (1.0,)),
        1.0,
        0,
        workdir=str(workdir),
        data_dir=str(tmp_path / 'empty'),
      )
    )
  assert not (workdir / 'checkpoints').exists()


_VERDICT_LINE = re.compile(r'^Verdict: (' + '|'.join(verdicts.WORDS) + r')( \(.*\))?$', re.M)
COMMITTED = os.path.join(os.path.dirname(paper.__file__), 'results', 'paper_cpu')


def test_every_cpu_entry_has_a_verdict_with_an_allowed_word():
  for key in REGISTRY:
    verdict = verdicts.lookup('cpu', key)
    assert verdict is not None, key
    assert verdict.verdict in verdicts.WORDS, key
    assert len(verdict.evidence) > 80, key  # the numbers it rests on, not just a word


@pytest.mark.parametrize('key', sorted(REGISTRY))
def test_rendered_caption_carries_the_verdict(rendered, key):
  out, _ = rendered
  caption = (out / f'{key}.md').read_text()
  match = _VERDICT_LINE.search(caption)
  assert match and match.group(1) == verdicts.lookup('cpu', key).verdict
  assert verdicts.lookup('cpu', key).evidence in caption
  assert caption.index('Verdict: ') < caption.index('Regenerate: ')


@pytest.mark.parametrize('key', sorted(REGISTRY))
def test_committed_caption_has_what_a_rerender_writes(key):
  """The committed .md carries the verdict the renderer writes for its runs, not stale."""
  text = open(os.path.join(COMMITTED, f'{key}.md')).read()
  paragraph = verdicts.for_caption('cpu', key, verdicts.runs_lines_of(text))
  assert f'\n\n{paragraph}\n\nRegenerate: `' in text
  assert 'judged on other runs' not in paragraph  # judged on exactly these runs


def test_a_verdict_on_other_runs_is_marked():
  verdict = verdicts.lookup('cpu', 'figure_1')
  assert 'judged on other runs' in verdicts.markdown(verdict, ['- other runs; T = 1 (3 seeds)'])


def test_theory_verdicts_are_appended(tmp_path):
  (tmp_path / 'prop_k1.md').write_text('| n |\n|---|\n')
  verdicts.append_theory(str(tmp_path), 'prop_k1', judged_sizes=False)
  text = (tmp_path / 'prop_k1.md').read_text()
  assert _VERDICT_LINE.search(text) and 'judged on other runs' in text


SAME_RUNS = {'figure_13': 11, 'figure_14': 12, 'figure_18': 5, 'figure_19': 5}


def test_figures_drawn_from_shared_runs_are_not_copies(rendered, tmp_path):
  """Figures whose runs overlap on the cpu preset draw different PNGs (the fixture's runs
  differ only by T and seed, so figures of different settings may coincide here)."""
  out, _ = rendered
  ctx = paper.make_context(paper.parse_args(['--outdir', str(tmp_path)]))
  runs = {key: set(paper.planned_runs(ctx, REGISTRY[key])) for key in FIGURES}
  pairs = [(a, b) for i, a in enumerate(FIGURES) for b in FIGURES[i + 1 :] if runs[a] & runs[b]]
  assert ('figure_11', 'figure_13') in pairs and ('figure_5', 'figure_19') in pairs
  same = [
    (a, b) for a, b in pairs if (out / f'{a}.png').read_bytes() == (out / f'{b}.png').read_bytes()
  ]
  assert same == []


@pytest.mark.parametrize('key', sorted(SAME_RUNS))
def test_a_figure_on_shared_runs_says_so(rendered, key):
  out, _ = rendered
  sentence = f'Same runs as Figure {SAME_RUNS[key]}'
  assert sentence in (out / f'{key}.md').read_text()
  assert sentence in open(os.path.join(COMMITTED, f'{key}.md')).read()


def test_same_runs_sentence_only_where_the_runs_are_shared(tmp_path):
  """On the paper preset Figures 11 and 13 are two models: no 'same runs' sentence."""
  from experiments.figures import probes  # pylint: disable=import-outside-toplevel

  same = probes._SAME_11  # pylint: disable=protected-access
  request = REGISTRY['figure_13'].requests[0]
  cpu = paper.make_context(paper.parse_args(['--outdir', str(tmp_path)]))
  full = paper.make_context(paper.parse_args(['--preset=paper', '--outdir', str(tmp_path)]))
  assert same.sentence(cpu, request).startswith('Same runs as Figure 11; ')
  assert same.sentence(full, request) == ''


@pytest.mark.parametrize('name', sorted(verdicts.THEORY))
def test_committed_theory_results_carry_their_verdict(name):
  text = open(os.path.join(os.path.dirname(COMMITTED), f'{name}.md')).read()
  assert text.endswith('\n' + verdicts.markdown(verdicts.THEORY[name], []) + '\n')


def _run_with_events(workdir: str) -> None:
  from clu import metric_writers  # pylint: disable=import-outside-toplevel

  _fake_run(workdir, 100.0, 1)
  os.makedirs(os.path.join(workdir, 'checkpoints', '10'))
  with open(os.path.join(workdir, 'checkpoints', '10', 'blob'), 'wb') as f:
    f.write(b'\0' * 100_000)
  writer = metric_writers.create_default_writer(workdir, asynchronous=False)
  for step in (1, 5, 10):
    writer.write_scalars(step, {'train/loss': 1.0 / step, 'init/logits_norm': 0.5})
  writer.close()


def test_a_compact_record_reads_back_like_its_run(tmp_path):
  run_dir, record_dir = str(tmp_path / 'run'), str(tmp_path / 'records' / 'x')
  _run_with_events(run_dir)
  size = records.write_record(run_dir, record_dir)
  assert size == records.record_bytes(record_dir) < 100_000  # no checkpoints
  assert not os.path.exists(os.path.join(record_dir, 'checkpoints'))
  assert not [f for f in os.listdir(record_dir) if f.startswith('events.out')]
  run = runs_lib.read_run(run_dir, 100.0, 1)
  rec = runs_lib.read_run(record_dir, 100.0, 1)
  assert rec.analysis == run.analysis and rec.config == run.config
  assert rec.train_results == run.train_results
  assert [r['step'] for r in rec.monitor.records] == [r['step'] for r in run.monitor.records]
  np.testing.assert_array_equal(
    rec.monitor.arrays(10)['alignment/head'], run.monitor.arrays(10)['alignment/head']
  )
  ev_run, ev_rec = run.events('train/'), rec.events('train/')
  assert list(ev_rec) == ['train/loss']
  np.testing.assert_array_equal(ev_rec['train/loss'][0], [1, 5, 10])
  np.testing.assert_allclose(ev_rec['train/loss'][1], ev_run['train/loss'][1])
  # Writing again replaces the record (a re-analysed run).
  with open(os.path.join(run_dir, 'train_results.json'), 'w') as f:
    json.dump({'init/logits_norm': 7.0}, f)
  records.write_record(run_dir, record_dir)
  assert runs_lib.read_run(record_dir, 100.0, 1).train_results == {'init/logits_norm': 7.0}


def test_render_only_draws_every_entry_from_records_alone(tmp_path):
  out = tmp_path / 'paper_cpu'
  ctx = _fake_runs(out, records_too=True)
  shutil.rmtree(ctx.root)  # a fresh clone: records only
  status = _render_only(out, '--only=figure_3,figure_11,table_1')
  assert status == {'figure_3': 'ok', 'figure_11': 'ok', 'table_1': 'ok'}
  assert (out / 'figure_3.png').stat().st_size > 0
  header = [l for l in (out / 'figure_3.md').read_text().splitlines() if l.startswith('Runs (')]
  assert len(header) == 1 and os.path.relpath(out / 'records') in header[0]  # what it read


def test_verdict_index_counts_and_links_every_caption(tmp_path):
  (tmp_path / 'figure_10.md').write_text('# Figure 10: B\n\nVerdict: reproduces\n')
  (tmp_path / 'figure_2.md').write_text(
    '# Figure 2: A\n\nVerdict: does not reproduce (judged on other runs than those above)\n'
  )
  (tmp_path / 'table_1.md').write_text('# Table 1: C\n\nno verdict line\n')
  path = verdicts.write_index(str(tmp_path))
  text = open(path).read()
  assert 'reproduces: 1, partly reproduces: 0, does not reproduce: 1' in text
  rows = [l for l in text.splitlines() if l.startswith('| [')]
  assert rows == [  # figures in numeric order; a stale verdict is marked; no verdict, no row
    '| [figure_2](figure_2.md) | Figure 2: A | does not reproduce (judged on other runs) |',
    '| [figure_10](figure_10.md) | Figure 10: B | reproduces |',
  ]
  assert verdicts.index_markdown(str(tmp_path)) == text  # the index is not read as a caption


def test_committed_verdict_index_is_current():
  with open(os.path.join(COMMITTED, verdicts.INDEX)) as f:
    assert f.read() == verdicts.index_markdown(COMMITTED)


def test_a_run_another_process_trains_is_skipped(tmp_path, monkeypatch):
  """Two `paper` processes on one runs folder: a run locked by the other is left to it."""
  calls = []

  def locked_then_ok(point, on_finished):
    calls.append(point.workdir)
    if len(calls) == 1:
      raise workdir_lock.LockedError(f'{point.workdir} is held by pid 1')

  monkeypatch.setattr(paper.experiment, 'run_point', locked_then_ok)
  ctx = paper.make_context(
    paper.parse_args([f'--outdir={tmp_path}', f'--results_dir={tmp_path / "results"}'])
  )
  paper.train_missing(ctx, REGISTRY['figure_2'], data_dir=None)
  assert len(calls) == len(paper.planned_runs(ctx, REGISTRY['figure_2'])) > 1


def test_render_only_into_another_folder_reads_the_committed_records(tmp_path):
  """`--render_only --outdir=/tmp/x` on a fresh clone draws from the committed records."""
  args = ['--render_only', f'--outdir={tmp_path}']
  assert paper.make_context(paper.parse_args(args)).records == os.path.join(COMMITTED, 'records')
  (tmp_path / 'records').mkdir()  # that folder's own records win once it has them
  assert paper.make_context(paper.parse_args(args)).records == str(tmp_path / 'records')
  training = paper.make_context(paper.parse_args([f'--outdir={tmp_path / "new"}']))
  assert training.records == str(tmp_path / 'new' / 'records')  # training never writes there
