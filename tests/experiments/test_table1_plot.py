"""experiments/table1_plot.py: per-layer curves over seeds from runs.jsonl records."""

import numpy as np
import pytest

from experiments import table1_plot


def _record(experiment, temperature, seed, id_acc, ood_acc):
  layers = ('dense_0', 'dense_1', 'logits')
  return {
    'experiment': experiment,
    'label': experiment,
    'temperature': temperature,
    'seed': seed,
    'id_probe_accuracy': dict(zip(layers, id_acc)),
    'ood_probe_accuracy': dict(zip(layers, ood_acc)),
    'representation_effective_rank': dict(zip(layers, (50.0 - seed, 20.0, 5.0))),
  }


def test_curve_is_the_mean_and_sample_std_over_seeds():
  runs = [
    _record('mlp', 1.0, s, acc, (0.9, 0.8, 0.5))
    for s, acc in enumerate(((0.5, 0.6, 0.4), (0.7, 0.6, 0.2)))
  ]
  mean, std = table1_plot._curve(runs, 'id_probe_accuracy', ['dense_0', 'dense_1', 'logits'])
  np.testing.assert_allclose(mean, [0.6, 0.6, 0.3])
  np.testing.assert_allclose(std, np.std([[0.5, 0.6, 0.4], [0.7, 0.6, 0.2]], axis=0, ddof=1))
  one_mean, one_std = table1_plot._curve(runs[:1], 'id_probe_accuracy', ['logits'])
  assert one_mean.tolist() == [0.4] and one_std.tolist() == [0.0]


def test_plot_writes_one_png_per_call_and_groups_by_setting(tmp_path):
  stale = _record('mlp', 1.0, 0, (0.1, 0.1, 0.1), (0.1, 0.1, 0.1))  # replaced below
  records = [stale] + [
    _record(exp, t, s, (0.5, 0.6, 0.4), (0.9, 0.8, 0.5))
    for exp in ('mlp', 'tin')
    for t in (1.0, 100.0)
    for s in (0, 1)
  ]
  settings = table1_plot._by_setting(records)
  assert list(settings) == ['mlp', 'tin'] and sorted(settings['mlp']) == [1.0, 100.0]
  assert [r['seed'] for r in settings['tin'][100.0]] == [0, 1]
  assert [r['id_probe_accuracy']['dense_0'] for r in settings['mlp'][1.0]] == [0.5, 0.5]
  path = tmp_path / 'probe_profiles.png'
  table1_plot.plot_probe_profiles(records, str(path))
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert [p.name for p in tmp_path.iterdir()] == ['probe_profiles.png']  # no .tmp left
  for rec in records:  # without ranks: the probe row alone
    del rec['representation_effective_rank']
  table1_plot.plot_probe_profiles(records, str(path))
  assert path.stat().st_size > 0


def test_plot_without_probes_is_refused(tmp_path):
  with pytest.raises(ValueError, match='no run has per-layer probe accuracies'):
    table1_plot.plot_probe_profiles(
      [{'experiment': 'mlp', 'temperature': 1.0}], str(tmp_path / 'x.png')
    )
