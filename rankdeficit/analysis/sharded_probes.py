"""Linear probes trained data-parallel on row-sharded features (the analysis's probes).

The training of `probes.train_probes` -- the same optax Adam with coupled L2 (or AdamW),
zero init, epochs, mini-batch size, remainder batch, per-epoch shuffle
`jax.random.permutation(fold_in(key, epoch), n)` and per-coordinate standardisation
(`probes.ProbeConfig`), layers vmapped in the same width-sorted groups -- on features whose
rows stay sharded over the mesh (`analysis.rows`):

* the shuffle is drawn over the split's row ids (its eval order), exactly as
  `probes.train_probes` draws it over the gathered rows; each device then looks up which
  of *its* rows fall in each mini-batch (`_batch_tables`, on the host, from the ids of this
  process's rows only) and computes the gradient of its part of the mini-batch loss;
* the gradients are summed over the devices (`psum`: `C (d + 1)` numbers per layer and
  step) and every device applies the same Adam update to its replicated probe;
* the standardisation's mean and variance, and the test accuracy, are sums over rows
  (`psum`).

The mini-batches are the same sets of rows as `probes.train_probes` uses, so the probes
are the same up to the order of float32 additions (tests/analysis/test_sharded_probes.py
compares the two). Device memory per step: `layers x rows-of-the-batch-on-this-device x
width`, about `batch / devices` rows.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from rankdeficit.analysis import probes
from rankdeficit.analysis import rows
from rankdeficit.metrics import row_blocks

AXIS = rows.DATA_AXIS


@functools.partial(jax.jit, static_argnames=('n', 'epochs'))
def _shuffles(key, *, n: int, epochs: int):
  return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(
    jnp.arange(epochs)
  )


def _epoch_steps(key: jax.Array, n: int, cfg: probes.ProbeConfig) -> np.ndarray:
  """[epochs, n]: the mini-batch (step) of each row id in each epoch, from the shuffle
  `permutation(fold_in(key, epoch), n)` of `probes._train_single`."""
  orders = np.asarray(jax.device_get(_shuffles(key, n=n, epochs=cfg.num_epochs)))
  positions = np.empty_like(orders)
  np.put_along_axis(positions, orders, np.arange(n)[None, :], axis=1)
  return positions // min(cfg.batch_size, n)


def _local_tables(ids: np.ndarray, steps_of: np.ndarray, steps: int):
  """For one device's rows (`ids`, -1 = padding): per epoch its rows sorted by step,
  their steps, each row's rank within its step and the largest per-step count."""
  epochs = steps_of.shape[0]
  step = np.where(ids >= 0, steps_of[:, np.maximum(ids, 0)], steps)  # padding: no step
  order = np.argsort(step, axis=1, kind='stable')
  step = np.take_along_axis(step, order, axis=1)
  flat = np.arange(epochs)[:, None] * (steps + 1) + step
  counts = np.bincount(flat.reshape(-1), minlength=epochs * (steps + 1))
  counts = counts.reshape(epochs, steps + 1)
  starts = np.cumsum(counts, axis=1) - counts
  rank = np.arange(step.shape[1])[None, :] - np.take_along_axis(starts, step, axis=1)
  return order, step, rank, int(counts[:, :steps].max(initial=0))


def _batch_tables(ids: jax.Array, n: int, key: jax.Array, cfg: probes.ProbeConfig, mesh):
  """[devices, epochs, steps, M] int32 sharded over `data`: device j's local row indices
  of each mini-batch (-1 = none), M the largest count of one device's rows in one batch."""
  steps_of = _epoch_steps(key, n, cfg)
  steps = math.ceil(n / min(cfg.batch_size, n))
  shards = sorted(ids.addressable_shards, key=lambda s: s.index[0].start or 0)
  local = [_local_tables(np.asarray(s.data), steps_of, steps) for s in shards]
  width = max(1, int(rows.process_counts(max(t[3] for t in local)).max()))
  epochs = steps_of.shape[0]
  blocks = []
  for shard, (order, step, rank, _) in zip(shards, local):
    table = np.full((epochs, steps + 1, width), -1, np.int32)
    e = np.broadcast_to(np.arange(epochs)[:, None], order.shape)
    real = step < steps
    table[e[real], step[real], rank[real]] = order[real]
    blocks.append(jax.device_put(table[None, :, :steps], shard.device))
  shape = (mesh.devices.size, epochs, steps, width)
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.make_array_from_single_device_arrays(shape, sharding, blocks)


def _standardizer(x, w, n: int, standardize: bool, axis):
  """`probes._standardizer` over the real rows of every device."""
  d = x.shape[-1]
  if not standardize:
    return jnp.zeros((d,), jnp.float32), jnp.ones((d,), jnp.float32)
  mean = row_blocks.psum(jnp.sum(x * w[:, None], axis=0), axis) / n
  var = row_blocks.psum(jnp.sum(jnp.square((x - mean) * w[:, None]), axis=0), axis) / n
  std = jnp.sqrt(var)
  scale = jnp.where(std > 1e-12, 1.0 / jnp.where(std > 1e-12, std, 1.0), 1.0)
  return mean, scale


def _train_local(x, mean, scale, y, tables, counts, *, num_classes, cfg, axis) -> probes.Probe:
  """One layer's probe from this device's rows `x [R, D]` standardised by `mean`, `scale`;
  `tables [epochs, steps, M]` its rows of each mini-batch, `counts [steps]` the mini-batch
  sizes (global)."""
  tx = probes.probe_optimizer(cfg)
  params = {
    'w': jnp.zeros((x.shape[-1], num_classes), jnp.float32),
    'b': jnp.zeros((num_classes,), jnp.float32),
  }

  def loss_fn(params, xb, yb, mb, count):
    logits = ((xb - mean) * scale) @ params['w'] + params['b']
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
    return jnp.sum(ce * mb) / count

  def step(carry, inp):
    params, opt_state = carry
    idx, count = inp
    rows_ = jnp.maximum(idx, 0)
    mb = (idx >= 0).astype(jnp.float32)
    grads = row_blocks.psum(jax.grad(loss_fn)(params, x[rows_], y[rows_], mb, count), axis)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def epoch(carry, idx):
    carry, _ = jax.lax.scan(step, carry, (idx, counts))
    return carry, None

  (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), tables)
  return probes.Probe(params['w'], params['b'], mean, scale)


@functools.partial(jax.jit, static_argnames=('n', 'num_classes', 'cfg', 'mesh'))
def _train_group(xs, y, ids, tables, counts, *, n, num_classes, cfg, mesh) -> probes.Probe:
  """Probes of the stacked layers `xs [L, N, D]` (rows sharded), vmapped over layers."""
  train = functools.partial(_train_local, num_classes=num_classes, cfg=cfg, axis=AXIS)

  def body(xs, y, ids, tables, counts):
    w = (ids >= 0).astype(jnp.float32)
    # One layer at a time, not vmapped: on XLA:CPU the vmapped reductions materialise
    # about 6 copies of the layers' features (12 GB for one 50,000 x 10,000 layer).
    stats = [_standardizer(xs[i], w, n, cfg.standardize, AXIS) for i in range(xs.shape[0])]
    mean, scale = (jnp.stack(s) for s in zip(*stats))
    per_layer = jax.vmap(train, in_axes=(0, 0, 0, None, None, None))
    return per_layer(xs, mean, scale, y, tables[0], counts)

  specs = (P(None, AXIS), P(AXIS), P(AXIS), P(AXIS), P())
  return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=P())(xs, y, ids, tables, counts)


@functools.partial(jax.jit, static_argnames=('width', 'mesh'))
def _stack(xs, *, width: int, mesh):
  """`[L, N, width]`: the layers zero-padded to `width` (probes.py: padding is inert)."""
  out = jnp.stack([jnp.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in xs])
  return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P(None, AXIS)))


def _check_labels(labels: jax.Array, ids: jax.Array, num_classes: int) -> None:
  bad = int(rows.to_host(jnp.sum((ids >= 0) & ((labels < 0) | (labels >= num_classes)))))
  if bad:
    raise ValueError(f'labels must be in [0, {num_classes}); {bad} are not')


def train_probes(
  xs: Sequence[jax.Array],
  labels: jax.Array,
  ids: jax.Array,
  num_examples: int,
  num_classes: int,
  *,
  key: jax.Array,
  config: probes.ProbeConfig = probes.ProbeConfig(),
) -> list[probes.Probe]:
  """One probe per row-sharded feature matrix `xs[i] [N, D_i]` (rows as `labels` and
  `ids`, -1 = padding; `num_examples` real rows), in `probes.train_probes`'s groups.

  Returns host (numpy) probes -- `D_i x C` weights, never features -- in the order of `xs`.
  """
  _check_labels(labels, ids, num_classes)
  mesh = labels.sharding.mesh
  n = num_examples
  tables = _batch_tables(ids, n, key, config, mesh)
  bs = min(config.batch_size, n)
  counts = jnp.asarray([min(bs, n - s * bs) for s in range(tables.shape[2])], jnp.float32)
  counts = rows.replicate(counts, mesh)
  widths = [x.shape[1] for x in xs]
  out: list[probes.Probe | None] = [None] * len(xs)
  cfg = probes.compiled_config(config)
  for group in probes.plan_groups(widths, n, config.max_group_bytes):
    stacked = _stack([xs[i] for i in group], width=max(widths[i] for i in group), mesh=mesh)
    res = jax.device_get(
      _train_group(
        stacked, labels, ids, tables, counts, n=n, num_classes=num_classes, cfg=cfg, mesh=mesh
      )
    )
    del stacked
    for k, i in enumerate(group):
      d = widths[i]
      out[i] = probes.Probe(res.w[k, :d], res.b[k], res.mean[k, :d], res.scale[k, :d])
  return out  # type: ignore[return-value]


def _correct_body(x, y, ids, probe, *, chunk: int, axis):
  """Correct predictions among this device's real rows, `chunk` rows at a time (the last
  chunk overlaps the previous one; its already counted rows are skipped)."""
  size = x.shape[0]
  chunk = min(chunk, size)

  def count(i, total):
    start = jnp.minimum(i * chunk, size - chunk)
    xb = jax.lax.dynamic_slice_in_dim(x, start, chunk)
    yb = jax.lax.dynamic_slice_in_dim(y, start, chunk)
    ib = jax.lax.dynamic_slice_in_dim(ids, start, chunk)
    pred = jnp.argmax(((xb - probe.mean) * probe.scale) @ probe.w + probe.b, axis=-1)
    fresh = start + jnp.arange(chunk) >= i * chunk
    return total + jnp.sum((pred == yb) & (ib >= 0) & fresh)

  zero = row_blocks.varying(jnp.zeros((), jnp.int32), axis)
  return row_blocks.psum(jax.lax.fori_loop(0, -(-size // chunk), count, zero), axis)


@functools.partial(jax.jit, static_argnames=('chunk', 'mesh'))
def _num_correct(probe, x, y, ids, *, chunk: int, mesh):
  body = functools.partial(_correct_body, chunk=chunk, axis=AXIS)
  specs = (P(AXIS), P(AXIS), P(AXIS), P())
  return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=P())(x, y, ids, probe)


def probe_accuracy(
  probe: probes.Probe,
  x: jax.Array,
  labels: jax.Array,
  ids: jax.Array,
  num_examples: int,
  *,
  batch_size: int = 8192,
) -> float:
  """Accuracy of `probe` on the real rows of row-sharded `x` (`batch_size` rows per
  device at a time)."""
  if num_examples == 0:
    raise ValueError('empty evaluation set')
  mesh = labels.sharding.mesh
  probe = rows.replicate(probe, mesh)
  correct = _num_correct(probe, x, labels, ids, chunk=max(1, batch_size), mesh=mesh)
  return float(rows.to_host(correct)) / num_examples


def fit_layer_probes(
  train,
  test,
  layers: Sequence[str],
  num_classes: int,
  *,
  key: jax.Array,
  config: probes.ProbeConfig = probes.ProbeConfig(),
) -> dict[str, float]:
  """Trains a probe per layer on `train` (`extraction.Features`) and returns {layer: test
  accuracy on `test`}, as `probes.fit_layer_probes` does on gathered features."""
  trained = train_probes(
    [train.reps[l] for l in layers],
    train.labels,
    train.ids,
    train.num_examples,
    num_classes,
    key=key,
    config=config,
  )
  return {
    l: probe_accuracy(
      p,
      test.reps[l],
      test.labels,
      test.ids,
      test.num_examples,
      batch_size=config.eval_batch_size,
    )
    for l, p in zip(layers, trained)
  }
