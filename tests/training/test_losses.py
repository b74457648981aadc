"""Temperature-scaled losses against float64 numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rankdeficit.training import losses


def _ce_reference(logits, labels, t):
  z = logits.astype(np.float64) / t
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -log_p[np.arange(len(labels)), labels]


def _mse_reference(logits, labels, t):
  z = logits.astype(np.float64) / t
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  onehot = np.eye(logits.shape[1])[labels]
  return ((p - onehot) ** 2).mean(-1)


@pytest.mark.parametrize('t', [0.5, 1.0, 10.0, 100.0, 1000.0])
def test_cross_entropy_matches_float64_reference(t):
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=5.0, size=(64, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 64)
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), t)
  np.testing.assert_allclose(
    np.asarray(got), _ce_reference(logits, labels, t), rtol=2e-5, atol=2e-6
  )


@pytest.mark.parametrize('t', [1.0, 100.0])
def test_softmax_mse_matches_float64_reference(t):
  rng = np.random.default_rng(1)
  logits = rng.normal(scale=3.0, size=(32, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 32)
  got = losses.softmax_mse(jnp.asarray(logits), jnp.asarray(labels), t)
  np.testing.assert_allclose(
    np.asarray(got), _mse_reference(logits, labels, t), rtol=1e-5, atol=1e-7
  )


def test_gradient_scales_as_one_over_temperature():
  # dCE/dz = (softmax(z/T) - y) / T. At tiny logits softmax(z/T) ~ uniform for every large T,
  # so the gradient at T=100 is 10x the one at T=1000 up to O(|z|/T) corrections.
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(scale=1e-3, size=(16, 10)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 16))
  grad = lambda t: jax.grad(lambda z: losses.cross_entropy(z, labels, t).sum())(logits)
  np.testing.assert_allclose(
    np.asarray(grad(100.0)), 10 * np.asarray(grad(1000.0)), rtol=1e-4, atol=1e-7
  )
  # Exact form against float64: (p - y) / T.
  t = 100.0
  z = np.asarray(logits, np.float64) / t
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  expected = (p - np.eye(10)[np.asarray(labels)]) / t
  np.testing.assert_allclose(np.asarray(grad(t)), expected, rtol=1e-4, atol=1e-8)


def test_unknown_loss_and_schedule_raise():
  with pytest.raises(ValueError, match='Unknown loss'):
    losses.get_loss_fn('hinge')
  with pytest.raises(ValueError, match='Unknown temperature schedule'):
    losses.temperature_schedule('exp', 1.0, 2.0, 10)
  with pytest.raises(ValueError, match='final_temperature'):
    losses.temperature_schedule('linear', 1.0, None, 10)


def test_temperature_schedules():
  const = losses.temperature_schedule('constant', 100.0, None, 10)
  assert float(const(0)) == float(const(9)) == 100.0
  lin = losses.temperature_schedule('linear', 100.0, 1.0, 10)
  np.testing.assert_allclose([float(lin(s)) for s in (0, 5, 10)], [100.0, 50.5, 1.0], rtol=1e-6)
  cos = losses.temperature_schedule('cosine', 100.0, 1.0, 10)
  np.testing.assert_allclose([float(cos(0)), float(cos(10))], [100.0, 1.0], rtol=1e-6)
  step = losses.temperature_schedule('step', 100.0, 1.0, 10, milestones_steps=(4, 8))
  np.testing.assert_allclose([float(step(s)) for s in (0, 4, 8)], [100.0, 10.0, 1.0], rtol=1e-5)


def test_annealing_schedules_match_float64_reference():
  """100 -> 1 as experiments/temperature_annealing.py runs it: a cosine over the run (then
  held at the final T) and one step at half of it."""
  total, steps = 40, np.arange(0, 48)
  s = np.minimum(steps, total).astype(np.float64)
  reference = 1.0 + (100.0 - 1.0) * 0.5 * (1.0 + np.cos(np.pi * s / total))
  cos = losses.temperature_schedule('cosine', 100.0, 1.0, total)
  np.testing.assert_allclose([float(cos(k)) for k in steps], reference, rtol=1e-5)
  step = losses.temperature_schedule('step', 100.0, 1.0, total, milestones_steps=(20,))
  np.testing.assert_allclose(
    [float(step(k)) for k in steps], np.where(steps < 20, 100.0, 1.0), rtol=1e-6
  )
