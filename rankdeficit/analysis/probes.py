"""Per-layer linear probes, effective depth (kappa) and OOD generalization loss (rho).

Paper A.5 / Table 5: one linear classifier (weights + bias) per layer on frozen features,
Adam, lr 1e-3, weight decay 1e-3, 50 epochs, mini-batch 4096, at most 10,000 feature
coordinates per layer (a fixed random subset of the flattened representation).

Choices where the paper is silent (all overridable through `ProbeConfig`):

* Weight decay is *coupled* L2 (`weight_decay * param` added to the gradient before the Adam
  moments), exactly like `torch.optim.Adam(..., weight_decay=1e-3)`, which the authors'
  PyTorch code uses; it applies to the bias too, as torch does for a plain
  `probe.parameters()` param group. `decoupled_weight_decay=True` switches to AdamW.
* Adam betas (0.9, 0.999), eps 1e-8 (torch == optax defaults).
* Probes are zero-initialised (logistic regression is convex, so the init barely matters,
  and zero init makes zero-padded coordinates provably inert, see below).
* Features are standardised per coordinate with the mean/std of the probe's *training* split
  (the same affine map is applied to the test split; constant coordinates get scale 1).
  The paper does not say; we standardise because the representation norms of the runs we
  compare differ by orders of magnitude (that is the point of the paper), and Adam with a
  fixed lr is not invariant to a global feature scale through its eps and the weight decay.
  `standardize=False` gives raw features.
* The last mini-batch of an epoch is the remainder (torch `DataLoader(drop_last=False)`); the
  loss is the mean over the real examples of each batch.
* One shuffle per epoch from `jax.random.fold_in(key, epoch)`; every layer of a group sees the
  same minibatch order, so training layer l inside a group equals training it alone with the
  same key (tested).

Speed: all layers of a group are trained by one jitted program: each layer's features are
zero-padded to the group's widest layer and the training (`lax.scan` over epochs and steps)
is `vmap`-ped over layers. With zero init, a zero-padded coordinate has zero gradient, zero
(coupled or decoupled) decay and hence a zero Adam update: its weight stays exactly 0, so
padding does not change the result. Memory: a group holds `layers x n x width` float32 on
the device (10 layers x 10,000 examples x 10,000 coordinates = 4 GB); layers are sorted by
width and packed greedily into groups of at most `ProbeConfig.max_group_bytes` (default
1 GiB), so a ResNet on 50,000 training images trains one or a few layers per program.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# --------------------------------------------------------------------------------------
# kappa / rho


def _as_accuracy_vector(acc: Sequence[float] | Mapping[str, float] | np.ndarray) -> np.ndarray:
  if isinstance(acc, Mapping):
    acc = list(acc.values())  # insertion order == forward order
  a = np.asarray(acc, dtype=np.float64).reshape(-1)
  if a.size == 0:
    raise ValueError('need the probe accuracy of at least one layer')
  if not np.all(np.isfinite(a)):
    raise ValueError(f'probe accuracies must be finite, got {a}')
  if np.any(a < 0):
    raise ValueError(f'probe accuracies must be >= 0, got {a}')
  return a


def effective_depth(
  acc_per_layer: Sequence[float] | Mapping[str, float] | np.ndarray, threshold: float = 0.99
) -> float:
  """Effective depth kappa (paper Sec. 2): first layer reaching `threshold` x last accuracy.

  kappa = i* / L with i* the 1-based index (forward order) of the first layer whose probe
  accuracy is >= `threshold` * (probe accuracy of the last layer), L the number of layers.
  Ties count as reaching (>=, with a 1e-12 slack against rounding of `threshold * last`).
  Edge cases: if the first layer already reaches it, kappa = 1/L (the minimum); the last layer
  always reaches it, so kappa <= 1. A mapping is read in insertion order.

  Raises:
    ValueError: no layers, non-finite or negative accuracies, or a last-layer accuracy of 0
      (then every layer "reaches 99% of it" and kappa is meaningless).
  """
  a = _as_accuracy_vector(acc_per_layer)
  if not 0 < threshold <= 1:
    raise ValueError(f'threshold must be in (0, 1], got {threshold}')
  last = a[-1]
  if last <= 0:
    raise ValueError("effective depth is undefined when the last layer's probe accuracy is 0")
  reached = a >= threshold * last - 1e-12
  first = int(np.argmax(reached))  # reached[-1] is True, so argmax finds the first True
  return (first + 1) / a.size


def ood_generalization_loss(
  ood_acc_per_layer: Sequence[float] | Mapping[str, float] | np.ndarray,
) -> float:
  """OOD generalization loss rho = (max_l acc_l - acc_last) / max_l acc_l, in [0, 1].

  0 when the last layer is (one of) the best. Raises ValueError when every accuracy is 0
  (rho undefined), or on empty / non-finite / negative input.
  """
  a = _as_accuracy_vector(ood_acc_per_layer)
  best = a.max()
  if best <= 0:
    raise ValueError('OOD generalization loss is undefined when every probe accuracy is 0')
  return float((best - a[-1]) / best)


# --------------------------------------------------------------------------------------
# Probe training


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """Linear-probe settings. The defaults are the paper's (Table 5) and are written only
  here: `analysis_config.AnalysisConfig.probe` holds one, set by its `probe_*` options."""

  learning_rate: float = 1e-3
  weight_decay: float = 1e-3
  decoupled_weight_decay: bool = False  # False: torch.optim.Adam (coupled L2); True: AdamW
  num_epochs: int = 50
  batch_size: int = 4096
  standardize: bool = True
  max_group_bytes: int = 1 << 30  # device memory bound of one vmapped group's features
  eval_batch_size: int = 8192


class Probe(NamedTuple):
  """A trained linear probe: logits = ((x - mean) * scale) @ w + b.

  Stacked probes have a leading layer axis.
  """

  w: Any  # [D, C]
  b: Any  # [C]
  mean: Any  # [D]
  scale: Any  # [D]


def probe_optimizer(cfg: ProbeConfig) -> optax.GradientTransformation:
  """The probes' Adam: coupled L2 as PyTorch's ``weight_decay`` (default) or AdamW."""
  if cfg.decoupled_weight_decay:
    return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
  # torch.optim.Adam(weight_decay=wd): g <- g + wd * p, then Adam.
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(cfg.learning_rate))


def _standardizer(x: jax.Array, standardize: bool):
  d = x.shape[-1]
  if not standardize:
    return jnp.zeros((d,), jnp.float32), jnp.ones((d,), jnp.float32)
  mean = jnp.mean(x, axis=0)
  var = jnp.mean(jnp.square(x - mean), axis=0)
  std = jnp.sqrt(var)
  scale = jnp.where(std > 1e-12, 1.0 / jnp.where(std > 1e-12, std, 1.0), 1.0)
  return mean, scale


def _train_single(
  x: jax.Array, y: jax.Array, key: jax.Array, *, num_classes: int, cfg: ProbeConfig
) -> Probe:
  """Trains one probe on x [n, D] (float32), y [n] int. Pure; jit/vmap-able over x."""
  n, d = x.shape
  bs = min(cfg.batch_size, n)
  steps = math.ceil(n / bs)
  pad = steps * bs - n
  mean, scale = _standardizer(x, cfg.standardize)
  tx = probe_optimizer(cfg)
  params = {
    'w': jnp.zeros((d, num_classes), jnp.float32),
    'b': jnp.zeros((num_classes,), jnp.float32),
  }
  opt_state = tx.init(params)

  def loss_fn(params, xb, yb, mb):
    logits = ((xb - mean) * scale) @ params['w'] + params['b']
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
    return jnp.sum(ce * mb) / jnp.maximum(jnp.sum(mb), 1.0)

  def epoch(carry, epoch_idx):
    params, opt_state = carry
    perm = jax.random.permutation(jax.random.fold_in(key, epoch_idx), n)
    perm = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(steps, bs)
    valid = (jnp.arange(steps * bs) < n).astype(jnp.float32).reshape(steps, bs)

    def step(carry, inp):
      params, opt_state = carry
      idx, mb = inp
      grads = jax.grad(loss_fn)(params, x[idx], y[idx], mb)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    carry, _ = jax.lax.scan(step, (params, opt_state), (perm, valid))
    return carry, None

  (params, _), _ = jax.lax.scan(epoch, (params, opt_state), jnp.arange(cfg.num_epochs))
  return Probe(params['w'], params['b'], mean, scale)


@functools.partial(jax.jit, static_argnames=('num_classes', 'cfg'))
def _train_single_jit(x, y, key, *, num_classes, cfg):
  return _train_single(x, y, key, num_classes=num_classes, cfg=cfg)


@functools.partial(jax.jit, static_argnames=('num_classes', 'cfg'))
def _train_group_jit(xs, y, key, *, num_classes, cfg):
  fn = functools.partial(_train_single, num_classes=num_classes, cfg=cfg)
  return jax.vmap(fn, in_axes=(0, None, None))(xs, y, key)


def compiled_config(cfg: ProbeConfig) -> ProbeConfig:
  """The config with host-only fields reset, so they do not trigger recompilation."""
  return dataclasses.replace(cfg, max_group_bytes=0, eval_batch_size=0)


def _check_labels(y, num_classes: int) -> np.ndarray:
  y = np.asarray(y).astype(np.int32).reshape(-1)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'labels must be in [0, {num_classes}), got [{y.min()}, {y.max()}]')
  return y


def train_probe(
  x: np.ndarray,
  y: np.ndarray,
  num_classes: int,
  *,
  key: jax.Array,
  config: ProbeConfig = ProbeConfig(),
) -> Probe:
  """Trains one linear probe on features x [n, ...] (flattened) with labels y [n]."""
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  y = _check_labels(y, num_classes)
  return jax.device_get(
    _train_single_jit(
      jnp.asarray(x), jnp.asarray(y), key, num_classes=num_classes, cfg=compiled_config(config)
    )
  )


def plan_groups(widths: Sequence[int], n: int, max_bytes: int) -> list[list[int]]:
  """Layer indices in groups trained together (one vmapped program each): sorted by width
  and packed greedily while ``len(group) * n * max width * 4`` bytes stay within
  ``max_bytes`` (a layer wider than the budget gets a group of its own)."""
  order = sorted(range(len(widths)), key=lambda i: (widths[i], i))
  groups, cur = [], []
  for i in order:
    cand = cur + [i]
    if cur and len(cand) * n * max(widths[j] for j in cand) * 4 > max_bytes:
      groups.append(cur)
      cand = [i]
    cur = cand
  if cur:
    groups.append(cur)
  return groups


def train_probes(
  xs: Sequence[np.ndarray],
  y: np.ndarray,
  num_classes: int,
  *,
  key: jax.Array,
  config: ProbeConfig = ProbeConfig(),
) -> list[Probe]:
  """Trains one probe per feature matrix (same examples and labels), vmapped in groups.

  Returns host (numpy) probes in the order of `xs`, each with its layer's own width.
  """
  xs = [np.asarray(x, np.float32).reshape(len(x), -1) for x in xs]
  y = _check_labels(y, num_classes)
  n = len(y)
  if any(len(x) != n for x in xs):
    raise ValueError('every layer needs one feature row per label')
  widths = [x.shape[1] for x in xs]
  out: list[Probe | None] = [None] * len(xs)
  y_dev = jnp.asarray(y)
  for group in plan_groups(widths, n, config.max_group_bytes):
    dmax = max(widths[i] for i in group)
    stacked = np.zeros((len(group), n, dmax), np.float32)
    for k, i in enumerate(group):
      stacked[k, :, : widths[i]] = xs[i]
    res = jax.device_get(
      _train_group_jit(
        jnp.asarray(stacked), y_dev, key, num_classes=num_classes, cfg=compiled_config(config)
      )
    )
    del stacked
    for k, i in enumerate(group):
      d = widths[i]
      out[i] = Probe(res.w[k, :d], res.b[k], res.mean[k, :d], res.scale[k, :d])
  return out  # type: ignore[return-value]


@jax.jit
def _predict(probe: Probe, x):
  return jnp.argmax(((x - probe.mean) * probe.scale) @ probe.w + probe.b, axis=-1)


def probe_predictions(probe: Probe, x: np.ndarray, *, batch_size: int = 8192) -> np.ndarray:
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  preds = [
    np.asarray(_predict(probe, jnp.asarray(x[i : i + batch_size])))
    for i in range(0, len(x), batch_size)
  ]
  return np.concatenate(preds) if preds else np.zeros((0,), np.int32)


def probe_accuracy(probe: Probe, x: np.ndarray, y: np.ndarray, *, batch_size: int = 8192) -> float:
  y = np.asarray(y).reshape(-1)
  if len(y) == 0:
    raise ValueError('empty evaluation set')
  return float(np.mean(probe_predictions(probe, x, batch_size=batch_size) == y))


def fit_layer_probes(
  train_features: Mapping[str, np.ndarray],
  train_labels: np.ndarray,
  test_features: Mapping[str, np.ndarray],
  test_labels: np.ndarray,
  num_classes: int,
  *,
  key: jax.Array,
  config: ProbeConfig = ProbeConfig(),
) -> dict[str, float]:
  """Trains a probe per layer on the train split and returns {layer: test accuracy}."""
  layers = list(train_features)
  if set(layers) != set(test_features):
    raise ValueError(f'train/test layers differ: {layers} vs {list(test_features)}')
  probes = train_probes(
    [train_features[l] for l in layers], train_labels, num_classes, key=key, config=config
  )
  return {
    l: probe_accuracy(p, test_features[l], test_labels, batch_size=config.eval_batch_size)
    for l, p in zip(layers, probes)
  }
