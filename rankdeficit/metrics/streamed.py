"""Statistics of row-sharded features, reduced over the devices without gathering rows.

Each function takes feature rows sharded over a mesh axis (``'data'``; see
``metrics.row_blocks``), computes its per-device partial sums on that device's rows and
adds them up with ``psum``: only ``O(C d + d^2)`` numbers cross devices, never a row.
Padded rows (``row_mask`` False) count nowhere. The results feed the in-memory metrics
unchanged (``nc1``-``nc4``, ``orthodev``, ``neco_score``, ``ood_metrics``):

* ``streamed_class_stats``: ``ClassStats`` (counts, class means, pooled within-class
  scatter) in two passes over the rows -- the means first, then the scatter of the rows
  about their class mean -- the centred formula of ``class_stats_update`` (no
  ``E[hh^T] - mu mu^T`` cancellation);
* ``streamed_class_means``: counts and class means only (OrthoDev);
* ``streamed_ncc``: the NC4 counts (``NccStats``) against given class means;
* ``streamed_mean``: the mean row (OrthoDev's OOD global mean);
* ``streamed_neco_fit``: NECO's StandardScaler and PCA from the streamed mean, variance
  and covariance of the standardised rows (the formula of ``neco_fit``);
* ``streamed_neco_score``: ``neco_score`` row by row, sharded like the features;
* ``streamed_logits_norm`` / ``streamed_mean_per_sample_norm``: the logits norms.

Sums run in float32 at matmul precision HIGHEST, like the in-memory metrics; only the
order of the additions differs (per device, then across devices).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from rankdeficit.metrics import checks
from rankdeficit.metrics import collapse
from rankdeficit.metrics import numerics
from rankdeficit.metrics import ood
from rankdeficit.metrics import row_blocks
from rankdeficit.metrics.row_blocks import DATA_AXIS

__all__ = [
  'streamed_class_stats',
  'streamed_class_means',
  'streamed_ncc',
  'streamed_mean',
  'streamed_neco_fit',
  'streamed_neco_score',
  'streamed_logits_norm',
  'streamed_mean_per_sample_norm',
]

_HI = jax.lax.Precision.HIGHEST


def _rows(fn):
  """Wraps ``fn(*row_arrays, mask, *, mesh, axis, **static)`` (jitted) into a function of
  row-sharded arrays whose mesh is found on the first one (``row_blocks.row_mesh``)."""

  @functools.wraps(fn)
  def wrapper(x, *args, axis: str = DATA_AXIS, **kwargs):
    mesh = row_blocks.row_mesh(x, axis)
    row_blocks.check_divisible(x, mesh, axis)
    return fn(x, *args, mesh=mesh, axis=axis, **kwargs)

  return wrapper


def _weights(row_mask, n: int) -> jax.Array:
  return jnp.ones((n,), jnp.float32) if row_mask is None else row_mask.astype(jnp.float32)


def _flat(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x [n, ...]`` as float ``[n, d]`` with its padded rows zeroed (even if not finite)."""
  x = numerics.as_float(x).reshape(x.shape[0], -1)
  return jnp.where(w[:, None] > 0, x, jnp.zeros_like(x))


def _class_sums(feats, labels, w, num_classes: int, axis):
  """Counts (NaN for a label outside [0, C)) and class means over every block."""
  dtype = feats.dtype
  onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * w[:, None]
  bad = row_blocks.psum(jnp.sum((w > 0) & ((labels < 0) | (labels >= num_classes))), axis)
  counts = row_blocks.psum(jnp.sum(onehot, axis=0), axis)
  counts = jnp.where(bad > 0, jnp.nan, counts)
  sums = row_blocks.psum(jnp.matmul(onehot.T, feats, precision=_HI), axis)
  return counts, sums / jnp.maximum(counts, 1.0)[:, None], onehot


def _class_stats_body(feats, labels, w, *, num_classes, axis):
  feats = _flat(feats, w)
  counts, means, onehot = _class_sums(feats, labels, w, num_classes, axis)
  centred = (feats - jnp.matmul(onehot, means, precision=_HI)) * w[:, None]
  scatter = row_blocks.psum(jnp.matmul(centred.T, centred, precision=_HI), axis)
  return collapse.ClassStats(counts=counts, means=means, within_scatter=scatter)


@_rows
@functools.partial(jax.jit, static_argnames=('num_classes', 'mesh', 'axis'))
def streamed_class_stats(
  feats, labels, num_classes: int, row_mask=None, *, mesh=None, axis=DATA_AXIS
) -> collapse.ClassStats:
  """``ClassStats`` of row-sharded ``feats [n, ...]`` with ``labels [n]`` (two passes:
  class means, then the centred within-class scatter); the same statistics as
  ``class_stats_from_features`` without gathering rows."""
  body = functools.partial(_class_stats_body, num_classes=num_classes)
  w = _weights(row_mask, feats.shape[0])
  return row_blocks.over_rows(
    body, (feats, labels, w), in_specs=(P(axis),) * 3, out_specs=P(), mesh=mesh, axis=axis
  )


def _class_means_body(feats, labels, w, *, num_classes, axis):
  counts, means, _ = _class_sums(_flat(feats, w), labels, w, num_classes, axis)
  return counts, means


@_rows
@functools.partial(jax.jit, static_argnames=('num_classes', 'mesh', 'axis'))
def streamed_class_means(
  feats, labels, num_classes: int, row_mask=None, *, mesh=None, axis=DATA_AXIS
) -> tuple[jax.Array, jax.Array]:
  """``(counts [C], class means [C, d])`` of row-sharded features (no scatter)."""
  body = functools.partial(_class_means_body, num_classes=num_classes)
  w = _weights(row_mask, feats.shape[0])
  return row_blocks.over_rows(
    body, (feats, labels, w), in_specs=(P(axis),) * 3, out_specs=P(), mesh=mesh, axis=axis
  )


def _ncc_body(feats, logits, w, means, *, axis):
  local = collapse.ncc_update(collapse.ncc_init(), _flat(feats, w), logits, means, w > 0)
  return jax.tree.map(lambda v: row_blocks.psum(v, axis), local)


@_rows
@functools.partial(jax.jit, static_argnames=('mesh', 'axis'))
def streamed_ncc(
  feats, logits, class_means, row_mask=None, *, mesh=None, axis=DATA_AXIS
) -> collapse.NccStats:
  """``ncc_update`` of empty counts with every row of row-sharded ``feats`` / ``logits``
  (NC4's second pass) against replicated ``class_means [C, d]``."""
  w = _weights(row_mask, feats.shape[0])
  return row_blocks.over_rows(
    _ncc_body,
    (feats, logits, w, class_means),
    in_specs=(P(axis), P(axis), P(axis), P()),
    out_specs=P(),
    mesh=mesh,
    axis=axis,
  )


def _mean_body(x, w, *, axis):
  total = row_blocks.psum(jnp.sum(w), axis)
  return row_blocks.psum(jnp.sum(_flat(x, w), axis=0), axis) / total


@_rows
@functools.partial(jax.jit, static_argnames=('mesh', 'axis'))
def streamed_mean(x, row_mask=None, *, mesh=None, axis=DATA_AXIS) -> jax.Array:
  """The mean row ``[d]`` of row-sharded ``x [n, ...]`` (masked rows excluded)."""
  w = _weights(row_mask, x.shape[0])
  return row_blocks.over_rows(
    _mean_body, (x, w), in_specs=(P(axis), P(axis)), out_specs=P(), mesh=mesh, axis=axis
  )


def _neco_moments(h, w, axis):
  """Global max|h|, and mean / variance of ``h / max|h|`` over the real rows."""
  n = row_blocks.psum(jnp.sum(w), axis)
  top = row_blocks.pmax(jnp.max(jnp.abs(h) * w[:, None], initial=0.0), axis)
  unit = jnp.where(jnp.isfinite(top) & (top > 0), top, 1.0)
  h = h / unit
  mean = row_blocks.psum(jnp.sum(h * w[:, None], axis=0), axis) / n
  var = row_blocks.psum(jnp.sum(jnp.square((h - mean) * w[:, None]), axis=0), axis) / n
  return h, n, unit, mean, var


def _neco_fit_body(feats, w, *, dim, axis):
  h, n, unit, mean, var = _neco_moments(_flat(feats, w), w, axis)
  eps = jnp.finfo(h.dtype).eps
  # sklearn's _is_constant_feature, as ood.neco_fit
  constant = var <= n * eps * var + (n * mean * eps) ** 2
  scale = jnp.where(constant, 1.0 / unit, jnp.sqrt(var))
  z = (h - mean) / scale * w[:, None]
  z = (z - row_blocks.psum(jnp.sum(z, axis=0), axis) / n) * w[:, None]
  cov = row_blocks.psum(jnp.matmul(z.T, z, precision=_HI), axis) / n
  with jax.default_matmul_precision('highest'):
    evals, evecs = jnp.linalg.eigh(cov)
  order = jnp.argsort(-evals)[:dim]
  return ood.NecoParams(
    mean=mean * unit,
    scale=scale * unit,
    components=evecs[:, order],
    explained_variance=evals[order],
  )


@_rows
@functools.partial(jax.jit, static_argnames=('dim', 'mesh', 'axis'))
def streamed_neco_fit(feats, dim: int, row_mask=None, *, mesh=None, axis=DATA_AXIS):
  """``neco_fit`` (StandardScaler + PCA of ``dim`` components) on row-sharded ID training
  features, from the streamed mean, variance and ``d x d`` covariance (``1 <= dim <= d``)."""
  width = feats.size // feats.shape[0]
  if not 1 <= dim <= width:
    raise ValueError(f'streamed_neco_fit: dim must be in [1, D={width}], got {dim}.')
  body = functools.partial(_neco_fit_body, dim=dim)
  w = _weights(row_mask, feats.shape[0])
  return row_blocks.over_rows(
    body, (feats, w), in_specs=(P(axis), P(axis)), out_specs=P(), mesh=mesh, axis=axis
  )


def _neco_score_body(feats, params, *, axis):
  del axis
  return ood.neco_score(params, feats)


@_rows
@functools.partial(jax.jit, static_argnames=('mesh', 'axis'))
def streamed_neco_score(feats, params: ood.NecoParams, *, mesh=None, axis=DATA_AXIS):
  """``neco_score(params, feats)`` computed on each device's rows: ``[n]`` scores sharded
  like ``feats`` (small: gather them for ``ood_metrics``)."""
  return row_blocks.over_rows(
    _neco_score_body,
    (feats, params),
    in_specs=(P(axis), P()),
    out_specs=P(axis),
    mesh=mesh,
    axis=axis,
  )


def _norm_body(m, w, *, axis):
  checks.real('logits', m)
  m = _flat(m, w)
  top = row_blocks.pmax(jnp.max(jnp.abs(m), initial=0.0), axis)
  scale = jnp.where(jnp.isfinite(top) & (top > 0), top, 1.0)
  frobenius = jnp.sqrt(row_blocks.psum(jnp.sum(jnp.square(m / scale)), axis)) * scale
  rows = row_blocks.psum(jnp.sum(numerics.norm(m, axis=-1) * w), axis)
  return frobenius, rows / jnp.maximum(row_blocks.psum(jnp.sum(w), axis), 1.0)


@_rows
@functools.partial(jax.jit, static_argnames=('mesh', 'axis'))
def _norms(logits, row_mask=None, *, mesh=None, axis=DATA_AXIS) -> tuple[Any, Any]:
  w = _weights(row_mask, logits.shape[0])
  return row_blocks.over_rows(
    _norm_body, (logits, w), in_specs=(P(axis), P(axis)), out_specs=P(), mesh=mesh, axis=axis
  )


def streamed_logits_norm(logits, row_mask=None, *, axis: str = DATA_AXIS) -> jax.Array:
  """``logits_norm`` (Frobenius, masked rows dropped) of row-sharded logits ``[n, C]``."""
  return _norms(logits, row_mask, axis=axis)[0]


def streamed_mean_per_sample_norm(logits, row_mask=None, *, axis: str = DATA_AXIS) -> jax.Array:
  """``mean_per_sample_norm`` (mean row L2 norm over the real rows) of row-sharded logits."""
  return _norms(logits, row_mask, axis=axis)[1]
