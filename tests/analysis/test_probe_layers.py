"""kappa / rho conventions on hand-built accuracy vectors with known answers."""

import numpy as np
import pytest

from rankdeficit.analysis import probe_layers

HIDDEN = ['dense_0', 'dense_1', 'dense_2']


def _acc(hidden, logits, softmax):
  return dict(zip(HIDDEN + ['logits', 'softmax'], hidden + [logits, softmax]))


def test_layer_lists():
  assert probe_layers.layers_for('paper', HIDDEN) == HIDDEN + ['logits']
  assert probe_layers.layers_for('post_softmax', HIDDEN) == HIDDEN + ['softmax']
  assert probe_layers.layers_for('hidden', HIDDEN) == HIDDEN
  with pytest.raises(ValueError, match='paper'):
    probe_layers.layers_for('penultimate', HIDDEN)


def test_kappa_each_convention():
  # paper: last = logits 0.50 -> first layer >= 0.495 is dense_1 (2nd of 4) -> 2/4.
  # post_softmax: last = softmax 0.30 -> dense_0 (0.40) already reaches it -> 1/4.
  # hidden: last = dense_2 0.80 -> only dense_2 reaches 0.792 -> 3/3.
  acc = _acc([0.40, 0.60, 0.80], logits=0.50, softmax=0.30)
  k = probe_layers.kappa_by_convention(acc, HIDDEN)
  assert k == {'paper': 0.5, 'post_softmax': 0.25, 'hidden': 1.0}


def test_rho_each_convention():
  # best over paper layers 0.8, last (logits) 0.6 -> 0.25; post_softmax last 0.2 -> 0.75;
  # hidden: last dense_2 = best -> 0.
  acc = _acc([0.5, 0.7, 0.8], logits=0.6, softmax=0.2)
  r = probe_layers.rho_by_convention(acc, HIDDEN)
  assert r['paper'] == pytest.approx(0.25)
  assert r['post_softmax'] == pytest.approx(0.75)
  assert r['hidden'] == 0.0


def test_undefined_is_none():
  acc = _acc([0.0, 0.0, 0.0], logits=0.0, softmax=0.5)
  assert probe_layers.rho_by_convention(acc, HIDDEN) == {
    'paper': None,
    'post_softmax': 0.0,
    'hidden': None,
  }


def test_final_layer_features_against_float64():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(5, 10)) * 300.0  # large logits: a naive exp would overflow
  for t in (1.0, 100.0):
    f = probe_layers.final_layer_features(z, t)
    e = np.exp(z / t - np.max(z / t, axis=1, keepdims=True))
    np.testing.assert_allclose(f['softmax'], e / e.sum(1, keepdims=True), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(f['logits'], z.astype(np.float32))
  with pytest.raises(ValueError, match='temperature'):
    probe_layers.final_layer_features(z, 0.0)
