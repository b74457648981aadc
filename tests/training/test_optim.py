"""Optimiser: coupled weight decay and multi-step LR, against a hand-written PyTorch-SGD update."""

import jax.numpy as jnp
import numpy as np
import optax

from configs import base
from rankdeficit.training import optim


def _config(**overrides):
  c = base.get_config()
  for k, v in overrides.items():
    c[k] = v
  return c


def test_multistep_schedule_in_epochs():
  c = _config(learning_rate=0.1, lr_milestones=(2, 4), lr_gamma=0.1)
  sched = optim.learning_rate_schedule(c, steps_per_epoch=10)
  np.testing.assert_allclose(
    [float(sched(s)) for s in (0, 19, 20, 39, 40, 100)],
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
    rtol=1e-6,
  )


def test_sgd_matches_pytorch_update_rule():
  # torch.optim.SGD: g += wd*w; buf = mom*buf + g; w -= lr*buf  (dampening 0, no nesterov).
  c = _config(learning_rate=0.1, momentum=0.9, weight_decay=1e-2, lr_milestones=())
  tx = optim.create_optimizer(c, steps_per_epoch=10)
  w = jnp.array([1.0, -2.0, 3.0])
  state = tx.init(w)
  w_ref, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3)
  rng = np.random.default_rng(0)
  for _ in range(5):
    g = rng.normal(size=3)
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
    w = optax.apply_updates(w, updates)
    g_ref = g + 1e-2 * w_ref
    buf = 0.9 * buf + g_ref
    w_ref = w_ref - 0.1 * buf
  np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-5)
  assert float(state.hyperparams['learning_rate']) == np.float32(0.1)


def test_plain_sgd_without_momentum_and_adam():
  c = _config(learning_rate=0.5, momentum=0.0, weight_decay=0.0, lr_milestones=())
  tx = optim.create_optimizer(c, 1)
  w = jnp.ones(2)
  updates, _ = tx.update(jnp.array([1.0, 2.0]), tx.init(w), w)
  np.testing.assert_allclose(np.asarray(updates), [-0.5, -1.0])
  c = _config(optimizer='adam', learning_rate=1e-3, lr_milestones=())
  tx = optim.create_optimizer(c, 1)
  updates, _ = tx.update(jnp.array([1.0, -2.0]), tx.init(w), w)
  assert np.all(np.abs(np.asarray(updates)) <= 1.1e-3)
