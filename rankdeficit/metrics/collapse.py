"""Neural Collapse NC1-NC4 (Papyan, Han & Donoho 2020; paper App. I) and OrthoDev
(paper Eq. 4), from streaming class statistics so they scale to ImageNet.

Notation: penultimate features ``h_i in R^d`` with labels ``y_i in {0..C-1}``, ``N`` samples,
``N_c`` per class, class means ``mu_c``, global mean ``mu_G = (1/N) sum_i h_i``, centred
class means ``M = [mu_c - mu_G]_c`` (``C x d``), classifier ``W`` (``C x d``; a Flax Dense
kernel is ``[d, C]`` so pass ``kernel.T``).

    Sigma_W = (1/N) sum_c sum_{i: y_i=c} (h_i - mu_c)(h_i - mu_c)^T
    Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T = M^T M / C
    NC1     = tr(Sigma_W Sigma_B^+) / C
    NC2     equinorm        = std_c ||M_c|| / mean_c ||M_c||          (std with ddof=1)
            equiangularity  = std_{c != c'} cos(M_c, M_c')            (ddof=1)
            max_angle       = mean_{c != c'} |cos(M_c, M_c') + 1/(C-1)|
            etf_distance    = || M M^T / ||M M^T||_F - (I - 11^T/C) / sqrt(C-1) ||_F
    NC3     = || W / ||W||_F - M / ||M||_F ||_F
    NC4     = (1/N) #{ i : argmax_c logits_i != argmin_c ||h_i - mu_c|| }

One streaming pass (``class_stats_update``) accumulates counts, running class means and
the pooled within-class scatter with Chan et al.'s parallel update -- every term is
centred, so there is no ``E[hh^T] - mu mu^T`` cancellation even when NC1 -> 0, and the
state is ``O(C d + d^2)`` (no per-class ``d x d``). NC1-NC3 need only that pass; NC4
compares against the FINAL class means, so it needs a second pass (``ncc_update``).
Invalid input never gives a plausible number: NaN features make NC1-NC3 NaN; labels
outside ``[0, C)`` make the counts NaN; a class with no samples makes NC1-NC3 NaN.
Eagerly (concrete statistics) ``nc1``/``nc2``/``nc3``/``neural_collapse`` raise a
``ValueError`` for the last two instead, and ``class_stats_from_features`` checks the
labels up front. Inputs sharded over an Explicit mesh are replicated batch by batch
(``placement``), so the streaming state stays ``O(C d + d^2)`` per device.

OrthoDev (paper Eq. 4, after Ben Ammar et al. 2024)::

    OrthoDev = Avg_c | <mu_c, mu_G^OOD> | / (||mu_c||_2 ||mu_G^OOD||_2)

with ``mu_c`` the (uncentred) ID class means on penultimate features and ``mu_G^OOD``
the (uncentred) mean of the OOD penultimate features, as the paper writes it.
``centre=mu_G`` optionally subtracts a vector (e.g. the ID global mean) from both.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.metrics import checks
from rankdeficit.metrics import numerics
from rankdeficit.metrics import placement

__all__ = [
  'ClassStats',
  'class_stats_init',
  'class_stats_update',
  'class_stats_from_features',
  'global_mean',
  'centred_class_means',
  'within_class_covariance',
  'nc1',
  'nc2',
  'nc3',
  'NccStats',
  'ncc_init',
  'ncc_update',
  'nc4',
  'neural_collapse',
  'neural_collapse_from_features',
  'orthodev',
]

_HI = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ClassStats:
  """Streaming per-class statistics (a pytree; jittable update).

  counts: ``[C]`` float32 samples per class.
  means: ``[C, d]`` running class means.
  within_scatter: ``[d, d]`` ``sum_c sum_{y_i=c} (h_i - mu_c)(h_i - mu_c)^T``.
  """

  counts: jax.Array
  means: jax.Array
  within_scatter: jax.Array


def class_stats_init(num_classes: int, dim: int, dtype=jnp.float32) -> ClassStats:
  """Empty statistics for ``num_classes`` classes of ``dim``-dimensional features."""
  return ClassStats(
    counts=jnp.zeros((num_classes,), dtype),
    means=jnp.zeros((num_classes, dim), dtype),
    within_scatter=jnp.zeros((dim, dim), dtype),
  )


@jax.jit
@placement.replicate_inputs
def class_stats_update(
  stats: ClassStats, feats: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> ClassStats:
  """Fold a batch ``feats [B, d]``, ``labels [B]`` (``mask [B]`` bool) into ``stats``.

  Chan's merge of two groups a (old) and b (batch) of one class::

      n = n_a + n_b,  delta = mean_b - mean_a,  mean = mean_a + delta n_b / n
      S = S_a + S_b + delta delta^T n_a n_b / n

  summed over classes (the pooled scatter only needs the sum). A (unmasked) label
  outside ``[0, C)`` makes the counts NaN (checked by the NC metrics).
  """
  dtype = stats.means.dtype
  num_classes = stats.counts.shape[0]
  feats = jnp.reshape(feats, (feats.shape[0], -1)).astype(dtype)
  w = jnp.ones(feats.shape[:1], dtype) if mask is None else mask.astype(dtype)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * w[:, None]
  out_of_range = jnp.any((w > 0) & ((labels < 0) | (labels >= num_classes)))
  n_b = jnp.where(out_of_range, jnp.nan, jnp.sum(onehot, axis=0))
  mean_b = jnp.matmul(onehot.T, feats, precision=_HI) / jnp.maximum(n_b, 1.0)[:, None]
  centred = (feats - jnp.matmul(onehot, mean_b, precision=_HI)) * w[:, None]
  scatter_b = jnp.matmul(centred.T, centred, precision=_HI)
  n_a = stats.counts
  n = n_a + n_b
  delta = mean_b - stats.means
  safe_n = jnp.maximum(n, 1.0)
  means = stats.means + delta * (n_b / safe_n)[:, None]
  cross = (n_a * n_b / safe_n)[:, None] * delta
  scatter = stats.within_scatter + scatter_b + jnp.matmul(cross.T, delta, precision=_HI)
  return ClassStats(counts=n, means=means, within_scatter=scatter)


def class_stats_from_features(
  feats: jax.Array, labels: jax.Array, num_classes: int, mask: jax.Array | None = None
) -> ClassStats:
  """``class_stats_update`` of empty statistics with one in-memory batch."""
  checks.non_empty('feats', feats)
  checks.labels_in_range(labels, num_classes, mask)
  feats = jnp.reshape(feats, (feats.shape[0], -1))
  stats = class_stats_init(num_classes, feats.shape[1])
  return class_stats_update(stats, feats, labels, mask)


def global_mean(stats: ClassStats) -> jax.Array:
  """``mu_G = sum_c N_c mu_c / N``."""
  total = jnp.maximum(jnp.sum(stats.counts), 1.0)
  return jnp.matmul(stats.counts, stats.means, precision=_HI) / total


def centred_class_means(stats: ClassStats) -> jax.Array:
  """``M = [mu_c - mu_G]_c``, ``[C, d]``."""
  return stats.means - global_mean(stats)[None, :]


def within_class_covariance(stats: ClassStats) -> jax.Array:
  """``Sigma_W = within_scatter / N``."""
  return stats.within_scatter / jnp.maximum(jnp.sum(stats.counts), 1.0)


def _checked_stats(fn):
  """Raise eagerly for concrete statistics that are invalid (see module docstring)."""

  @functools.wraps(fn)
  def wrapper(stats, *args, **kwargs):
    if isinstance(stats, ClassStats):
      checks.class_counts(stats.counts)
    return fn(stats, *args, **kwargs)

  return wrapper


def _valid(stats: ClassStats | jax.Array, *arrays: jax.Array) -> jax.Array:
  """Traced validity: finite statistics/arrays and (for ``ClassStats``) every class seen."""
  leaves = [*jax.tree.leaves(stats), *arrays]
  ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
  if isinstance(stats, ClassStats):
    ok &= jnp.all(stats.counts > 0)
  return ok


def _centred(stats_or_means: ClassStats | jax.Array) -> jax.Array:
  if isinstance(stats_or_means, ClassStats):
    return centred_class_means(stats_or_means)
  return jnp.asarray(stats_or_means)


@_checked_stats
@jax.jit
@placement.replicate_inputs
def nc1(stats: ClassStats) -> jax.Array:
  """``tr(Sigma_W Sigma_B^+) / C``.

  With the thin SVD ``M = U S V^T``: ``Sigma_B^+ = C V S^-2 V^T`` over the singular
  values above ``s_1 max(C, d) eps``, so ``NC1 = sum_k v_k^T Sigma_W v_k / s_k^2``
  (no ``d x d`` inverse). NaN for invalid statistics.
  """
  m = centred_class_means(stats)
  sigma_w = within_class_covariance(stats)
  valid = _valid(stats)
  m = jnp.where(valid, m, 0.0)
  with jax.default_matmul_precision('highest'):
    _, s, vt = jnp.linalg.svd(m, full_matrices=False)
    tol = s[0] * max(m.shape) * jnp.finfo(m.dtype).eps
    keep = s > tol
    quad = jnp.einsum('kd,de,ke->k', vt, sigma_w, vt, precision=_HI)
  value = jnp.sum(jnp.where(keep, quad / jnp.where(keep, s * s, 1.0), 0.0))
  return jnp.where(valid, value, jnp.nan)


def _offdiag(x: jax.Array) -> jax.Array:
  c = x.shape[0]
  return x[~np.eye(c, dtype=bool)]  # static mask: jittable


@_checked_stats
@jax.jit
@placement.replicate_inputs
def nc2(stats_or_means: ClassStats | jax.Array) -> dict[str, jax.Array]:
  """Equinorm, equiangularity, max-angle deviation and ETF distance of the centred class
  means (``ClassStats`` or an already centred ``[C, d]`` array).

  All four are scale-invariant and computed on ``M / max|M|``; NaN for invalid input.
  """
  m = _centred(stats_or_means)
  valid = _valid(stats_or_means, m)
  m = m / numerics.max_abs_scale(m)
  c = m.shape[0]
  norms = jnp.linalg.norm(m, axis=1)
  unit = numerics.unit_rows(m)
  cos = _offdiag(jnp.matmul(unit, unit.T, precision=_HI))
  gram = jnp.matmul(m, m.T, precision=_HI)
  etf = (jnp.eye(c) - jnp.ones((c, c)) / c) / jnp.sqrt(c - 1.0)
  out = {
    'nc2_equinorm': jnp.std(norms, ddof=1) / jnp.mean(norms),
    'nc2_equiangularity': jnp.std(cos, ddof=1),
    'nc2_max_angle': jnp.mean(jnp.abs(cos + 1.0 / (c - 1))),
    'nc2_etf_distance': jnp.linalg.norm(gram / jnp.linalg.norm(gram) - etf),
  }
  return {k: jnp.where(valid, v, jnp.nan) for k, v in out.items()}


@_checked_stats
@jax.jit
@placement.replicate_inputs
def nc3(stats_or_means: ClassStats | jax.Array, classifier: jax.Array) -> jax.Array:
  """``|| W/||W||_F - M/||M||_F ||_F`` with ``classifier`` ``W`` as ``C x d``."""
  m = _centred(stats_or_means)
  w = jnp.asarray(classifier, m.dtype)
  if w.shape != m.shape:
    raise ValueError(f'classifier must be C x d = {m.shape} (Dense kernel.T), got {w.shape}')
  valid = _valid(stats_or_means, m, w)
  w_unit = w / numerics.norm(w, axis=(0, 1))
  m_unit = m / numerics.norm(m, axis=(0, 1))
  return jnp.where(valid, jnp.linalg.norm(w_unit - m_unit), jnp.nan)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NccStats:
  """Second pass for NC4: number of (masked) samples and of network/NCC disagreements."""

  total: jax.Array
  mismatches: jax.Array


def ncc_init() -> NccStats:
  """Empty NC4 counts."""
  return NccStats(total=jnp.zeros((), jnp.float32), mismatches=jnp.zeros((), jnp.float32))


@jax.jit
@placement.replicate_inputs
def ncc_update(
  stats: NccStats,
  feats: jax.Array,
  logits: jax.Array,
  class_means: jax.Array,
  mask: jax.Array | None = None,
) -> NccStats:
  """Count samples whose ``argmax logits`` differs from the nearest class mean
  ``argmin_c ||h - mu_c||^2 = argmin_c (||mu_c||^2 - 2 <h, mu_c>)`` (uncentred ``mu_c``).

  A sample with non-finite features or logits makes the count NaN.
  """
  feats = jnp.reshape(feats, (feats.shape[0], -1)).astype(class_means.dtype)
  dist = jnp.sum(class_means**2, axis=1)[None, :] - 2.0 * jnp.matmul(
    feats, class_means.T, precision=_HI
  )
  differ = (jnp.argmin(dist, axis=1) != jnp.argmax(logits, axis=1)).astype(jnp.float32)
  finite = numerics.all_finite(feats, -1) & numerics.all_finite(logits, -1)
  differ = jnp.where(finite, differ, jnp.nan)
  w = jnp.ones_like(differ) if mask is None else mask.astype(jnp.float32)
  mismatches = jnp.sum(jnp.where(w > 0, differ * w, 0.0))
  return NccStats(total=stats.total + jnp.sum(w), mismatches=stats.mismatches + mismatches)


def nc4(stats: NccStats) -> jax.Array:
  """Fraction of samples where the network and the nearest-class-mean rule disagree."""
  return jnp.where(stats.total > 0, stats.mismatches / jnp.maximum(stats.total, 1.0), jnp.nan)


def neural_collapse(
  stats: ClassStats, classifier: jax.Array | None = None, ncc: NccStats | None = None
) -> dict[str, jax.Array]:
  """All available NC metrics as a dict (``nc3`` needs ``classifier``, ``nc4`` needs ``ncc``)."""
  out = {'nc1': nc1(stats), **nc2(stats)}
  if classifier is not None:
    out['nc3'] = nc3(stats, classifier)
  if ncc is not None:
    out['nc4'] = nc4(ncc)
  return out


def neural_collapse_from_features(
  feats: jax.Array,
  labels: jax.Array,
  num_classes: int,
  *,
  logits: jax.Array | None = None,
  classifier: jax.Array | None = None,
  mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Both passes on in-memory arrays (small data / tests)."""
  stats = class_stats_from_features(feats, labels, num_classes, mask)
  ncc = None
  if logits is not None:
    ncc = ncc_update(ncc_init(), feats, logits, stats.means, mask)
  return neural_collapse(stats, classifier, ncc)


@jax.jit
@placement.replicate_inputs
def orthodev(
  class_means: jax.Array, ood_global_mean: jax.Array, *, centre: jax.Array | None = None
) -> jax.Array:
  """``Avg_c |cos(mu_c, mu_G^OOD)|`` (paper Eq. 4; see module docstring).

  Args:
    class_means: ``[C, d]`` ID class means (``ClassStats.means``).
    ood_global_mean: ``[d]`` mean OOD penultimate feature.
    centre: optional ``[d]`` vector subtracted from both first (default: none, as Eq. 4).

  Returns:
    The mean absolute cosine (rows rescaled first, so |mu| ~ 1e30 is fine); NaN for
    non-finite input.
  """
  mu = numerics.as_float(class_means)
  g = numerics.as_float(ood_global_mean)
  if centre is not None:
    mu = mu - centre[None, :]
    g = g - centre
  cos = jnp.matmul(numerics.unit_rows(mu), numerics.unit_rows(g[None, :])[0], precision=_HI)
  return jnp.mean(jnp.abs(cos))
