"""Tests of rankdeficit.analysis.probes: kappa, rho, probe training."""

import dataclasses

import jax
import numpy as np
import pytest

from rankdeficit.analysis import probes

# Small, fast probe settings (the paper's are ProbeConfig() defaults).
FAST = probes.ProbeConfig(num_epochs=30, batch_size=256, learning_rate=1e-2)


# ---------------------------------------------------------------- kappa


@pytest.mark.parametrize(
  'acc, expected',
  [
    ([0.2, 0.5, 0.8, 0.9, 0.9], 4 / 5),  # tie with the last layer: first of the tie counts
    ([0.2, 0.5, 0.891, 0.9], 3 / 4),  # 0.891 == 0.99 * 0.9 exactly: ">=" reaches
    ([0.2, 0.5, 0.8909, 0.9], 4 / 4),  # just below 99%: only the last layer
    ([0.95, 0.5, 0.6, 0.95], 1 / 4),  # first layer already reaches it -> 1/L
    ([0.99, 0.3, 0.3, 1.0], 1 / 4),  # 0.99 >= 0.99 * 1.0
    ([0.5], 1.0),  # single layer
    ([0.1, 0.97, 0.2, 0.96], 2 / 4),  # a middle layer above the last counts
    ([0.0, 0.0, 0.5], 1.0),
  ],
)
def test_effective_depth_hand_computed(acc, expected):
  assert probes.effective_depth(acc) == pytest.approx(expected)


def test_effective_depth_threshold_and_mapping():
  acc = {'l1': 0.5, 'l2': 0.85, 'l3': 0.9, 'l4': 1.0}
  assert probes.effective_depth(acc) == pytest.approx(4 / 4)
  assert probes.effective_depth(acc, threshold=0.9) == pytest.approx(3 / 4)
  assert probes.effective_depth(acc, threshold=0.5) == pytest.approx(1 / 4)
  # Table 1 MLP row (8 layers): 75% = layer 6 of 8.
  assert probes.effective_depth([0.3, 0.4, 0.45, 0.5, 0.52, 0.545, 0.55, 0.55]) == pytest.approx(
    0.75
  )


@pytest.mark.parametrize('bad', [[], [0.0, 0.0, 0.0], [0.5, 0.0], [0.5, float('nan')], [-0.1, 0.5]])
def test_effective_depth_rejects_undefined(bad):
  with pytest.raises(ValueError):
    probes.effective_depth(bad)


# ---------------------------------------------------------------- rho


@pytest.mark.parametrize(
  'acc, expected',
  [
    ([0.3, 0.6, 0.4], (0.6 - 0.4) / 0.6),
    ([0.3, 0.6, 0.6], 0.0),  # tie between the best and the last layer
    ([0.6, 0.6, 0.3], 0.5),  # tie among the best layers
    ([0.8, 0.2], 0.75),  # first layer is the best
    ([0.1, 0.2, 0.9], 0.0),  # last is the best
    ([0.0, 0.0, 0.5], 0.0),
    ([0.5, 0.0], 1.0),  # last layer at zero accuracy
    ([0.7], 0.0),
  ],
)
def test_ood_generalization_loss_hand_computed(acc, expected):
  assert probes.ood_generalization_loss(acc) == pytest.approx(expected)


@pytest.mark.parametrize('bad', [[], [0.0, 0.0], [float('inf'), 0.1]])
def test_ood_generalization_loss_rejects_undefined(bad):
  with pytest.raises(ValueError):
    probes.ood_generalization_loss(bad)


# ---------------------------------------------------------------- probe training


def _separable(n=1200, d=20, c=4, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(c, d)) * 4.0
  y = rng.integers(0, c, size=n)
  x = centers[y] + rng.normal(size=(n, d))
  return x.astype(np.float32), y.astype(np.int32)


def test_probe_separable_near_perfect():
  x, y = _separable()
  probe = probes.train_probe(x[:1000], y[:1000], 4, key=jax.random.PRNGKey(0), config=FAST)
  assert probes.probe_accuracy(probe, x[1000:], y[1000:]) > 0.97


def test_probe_shuffled_labels_chance():
  x, y = _separable(n=2000, d=10)
  y_shuf = np.random.default_rng(1).permutation(y)
  probe = probes.train_probe(x[:1000], y_shuf[:1000], 4, key=jax.random.PRNGKey(0), config=FAST)
  acc = probes.probe_accuracy(probe, x[1000:], y_shuf[1000:])
  assert abs(acc - 0.25) < 0.07


def test_probe_deterministic_for_seed():
  x, y = _separable(n=700)
  a = probes.train_probe(x, y, 4, key=jax.random.PRNGKey(3), config=FAST)
  b = probes.train_probe(x, y, 4, key=jax.random.PRNGKey(3), config=FAST)
  c = probes.train_probe(x, y, 4, key=jax.random.PRNGKey(4), config=FAST)
  np.testing.assert_array_equal(a.w, b.w)
  np.testing.assert_array_equal(a.b, b.b)
  assert not np.array_equal(a.w, c.w)  # a different seed shuffles differently


@pytest.mark.parametrize('group_bytes', [1 << 30, 1])  # one vmapped group / one layer per group
def test_vmapped_layers_equal_single_layer(group_bytes):
  rng = np.random.default_rng(0)
  x, y = _separable(n=600, d=12)
  layers = [
    x,
    rng.normal(size=(600, 30)).astype(np.float32) + x[:, :1],
    x[:, :5] * 100.0,
    np.zeros((600, 3), np.float32),
  ]  # incl. scale and dead features
  cfg = dataclasses.replace(FAST, max_group_bytes=group_bytes)
  key = jax.random.PRNGKey(7)
  multi = probes.train_probes(layers, y, 4, key=key, config=cfg)
  for feats, pm in zip(layers, multi):
    single = probes.train_probe(feats, y, 4, key=key, config=cfg)
    assert pm.w.shape == single.w.shape == (feats.shape[1], 4)
    np.testing.assert_allclose(pm.w, single.w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pm.b, single.b, rtol=1e-4, atol=1e-5)


def test_decoupled_weight_decay_differs_and_paper_defaults():
  cfg = probes.ProbeConfig()
  assert (cfg.learning_rate, cfg.weight_decay, cfg.num_epochs, cfg.batch_size) == (
    1e-3,
    1e-3,
    50,
    4096,
  )
  assert not cfg.decoupled_weight_decay  # torch.optim.Adam semantics
  x, y = _separable(n=300)
  big = dataclasses.replace(FAST, weight_decay=0.1, num_epochs=3)
  a = probes.train_probe(x, y, 4, key=jax.random.PRNGKey(0), config=big)
  b = probes.train_probe(
    x, y, 4, key=jax.random.PRNGKey(0), config=dataclasses.replace(big, decoupled_weight_decay=True)
  )
  assert not np.allclose(a.w, b.w)


def test_fit_layer_probes_and_plan_groups():
  x, y = _separable(n=1000)
  noise = np.random.default_rng(2).normal(size=(1000, 8)).astype(np.float32)
  train = {'noise': noise[:800], 'signal': x[:800]}
  test = {'noise': noise[800:], 'signal': x[800:]}
  acc = probes.fit_layer_probes(
    train, y[:800], test, y[800:], 4, key=jax.random.PRNGKey(0), config=FAST
  )
  assert list(acc) == ['noise', 'signal']
  assert acc['signal'] > 0.95 and acc['noise'] < 0.45
  groups = probes.plan_groups([10, 100, 50, 5], n=10, max_bytes=6000)
  assert sorted(sum(groups, [])) == [0, 1, 2, 3]
  assert groups == [[3, 0, 2], [1]]
