"""Figure 17 (App. E) with its middle panel (calibrated T), from synthetic run directories."""

import json
import os

import pytest

from experiments import paper
from experiments.figures import init_norm
from experiments.figures.runs import read_run
from rankdeficit.training import monitor_log

LAYERS = ['dense_0', 'dense_1', 'dense_2']
N0 = {'kaiming': 4.0, 'pytorch': 0.08, 'normal0.05': 1.7, 'normal0.01': 4e-6}


def _fake_run(workdir: str, *, n0: float, temperature: float, final_rank: int) -> None:
  """A finished run: train_results (n0, chosen T) and a monitor log ending at `final_rank`."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'train_results.json'), 'w') as f:
    json.dump({'init/logits_norm': n0, 'init/temperature': temperature}, f)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'temperature': temperature}, f)
  log = monitor_log.MonitorLog(workdir)
  for step, rank in ((0, 256), (30, final_rank)):
    log.write(
      step,
      {f'rank/rep/{l}': rank + 10 * (len(LAYERS) - i) for i, l in enumerate(LAYERS)}
      | {'rank/rep/dense_2': rank},
      temperature=temperature,
    )


def _plan(out):
  ctx = paper.make_context(paper.parse_args(['--outdir', str(out), '--seeds=1']))
  return ctx, paper.planned_runs(ctx, paper.REGISTRY['figure_17'])


def _rank(workdir: str) -> int:
  """Distinct per run: the calibrated ones 40 + i, the others 10 + i."""
  return (40 if '_norm' in workdir else 10) + sorted(N0).index(
    os.path.basename(os.path.dirname(workdir)).split('-')[1].split('_')[0]
  )


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  out = tmp_path_factory.mktemp('paper_cpu')
  _, plan = _plan(out)
  skipped = None
  for workdir, (_, request, _, _) in plan.items():
    scheme = request.variant.split('_')[0]
    if request.variant == f'normal0.01_norm{init_norm.F17_TARGET_NORM:g}':
      skipped = workdir  # as if it diverged: no train_results.json
      continue
    calibrated = 'target_logits_norm' in dict(request.overrides)
    t = N0[scheme] / init_norm.F17_TARGET_NORM if calibrated else 1.0
    _fake_run(workdir, n0=N0[scheme], temperature=t, final_rank=_rank(workdir))
  status = paper.main(['--render_only', '--only=figure_17', '--seeds=1', '--outdir', str(out)])
  return out, status, skipped


def test_calibrated_requests_set_the_target_for_every_scheme():
  _, plan = _plan('/nonexistent')
  calibrated = [r for _, r, _, _ in plan.values() if dict(r.overrides).get('target_logits_norm')]
  assert sorted(r.variant.split('_')[0] for r in calibrated) == sorted(N0)
  for request in calibrated:
    overrides = dict(request.overrides)
    assert overrides['target_logits_norm'] == init_norm.F17_TARGET_NORM
    assert overrides['model.layer_norm'] is False


def test_figure_17_has_three_panels_from_the_runs(rendered):
  out, status, _ = rendered
  assert status == {'figure_17': 'ok'}
  png = out / 'figure_17.png'
  assert png.read_bytes()[:4] == b'\x89PNG' and png.stat().st_size < 300_000
  caption = (out / 'figure_17.md').read_text()
  # The renderer's own 'Middle: ...' sentence (the verdict's evidence may quote it too).
  middle = caption.split('Middle: ', 1)[1].split('. Right: ')[0]
  # The middle panel holds the calibrated runs (ranks 40+), with T = n0 / target.
  assert (
    f'kaiming: init norm 4, T {4 / init_norm.F17_TARGET_NORM:.3g}, final rank '
    f'{40 + sorted(N0).index("kaiming")}' in middle
  )
  assert 'final rank 1' not in middle  # no uncalibrated run leaks into it
  assert 'middle: final ranks 40-43' in caption and 'left: final ranks 10-13' in caption


def test_a_missing_calibrated_run_is_named(rendered):
  out, _, skipped = rendered
  assert skipped is not None
  caption = (out / 'figure_17.md').read_text()
  assert 'Not finished (diverged or not trained): normal0.01_norm1' in caption


def test_final_penultimate_rank_reads_the_last_monitor_call(tmp_path):
  _fake_run(str(tmp_path), n0=1.0, temperature=1.0, final_rank=7)
  assert init_norm.final_penultimate_rank(read_run(str(tmp_path), 1.0, 0)) == 7
