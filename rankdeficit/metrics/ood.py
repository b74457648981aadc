"""OOD detection: the NECO score and the threshold-free / FPR@95 metrics.

NECO (Ben Ammar et al., ICLR 2024). Fit on ID *training* penultimate features ``h``:
``z = (h - mean) / std`` (sklearn ``StandardScaler``: population std; a constant
coordinate, up to rounding, gets std 1), then
PCA of ``z``: ``V_d`` = top-``d`` principal directions (eigenvectors of the covariance of
``z``, ``[D, d]``). Score::

    NECO(h) = || V_d^T z || / || z ||        (x max_c logits_c for ViT; higher = ID)

(The reference code applies ``pca.transform`` whose centring uses the PCA mean of the
standardised training features, which is 0 up to rounding; it is omitted here.)

Metrics. Scores are "higher = more in-distribution" throughout; inputs are
``id_scores [n_id]`` and ``ood_scores [n_ood]``.

* ``auroc``: area under the ROC curve, ties counted 1/2 (Mann-Whitney with mid-ranks),
  identical to ``sklearn.metrics.roc_auc_score`` (its trapezoidal ROC over distinct
  thresholds); symmetric in which class is called positive.
* ``aupr_in`` / ``aupr_out``: average precision (``sklearn.metrics.average_precision_score``:
  ``AP = sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds, no interpolation) with ID
  positive (score as is) / OOD positive (score negated).
* ``fpr_at_95_tpr(convention='neco')`` (default; ViM / NECO code, the paper's Table 2):
  ID positive. ``thresh = sort(id)[-floor(0.95 n_id)]`` keeps (at least) 95% of ID;
  FPR = fraction of OOD with ``score >= thresh``.
  ``convention='openood'``: OOD positive, OpenOOD's
  ``fpr[argmax(tpr >= 0.95)]`` on ``roc_curve(is_ood, -score)``: the fraction of ID flagged
  as OOD at the first (highest-threshold) ROC point detecting >= 95% of OOD.

Invalid input: any NaN score makes every metric NaN (a NaN has no place in a ranking);
an empty ID or OOD set is a ``ValueError`` (shapes are static, so also under ``jit``);
``neco_fit`` needs ``1 <= dim <= D``. Inputs sharded over an Explicit mesh are
replicated first (``placement``): sorting needs all scores on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from rankdeficit.metrics import checks
from rankdeficit.metrics import numerics
from rankdeficit.metrics import placement

__all__ = [
  'NecoParams',
  'neco_fit',
  'neco_score',
  'auroc',
  'aupr_in',
  'aupr_out',
  'fpr_at_95_tpr',
  'ood_metrics',
]

_HI = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NecoParams:
  """The fitted StandardScaler and PCA of ``neco_fit`` (a pytree)."""

  mean: jax.Array  # [D]
  scale: jax.Array  # [D]
  components: jax.Array  # [D, d] top principal directions (columns)
  explained_variance: jax.Array  # [d]


def neco_fit(train_feats: jax.Array, dim: int) -> NecoParams:
  """StandardScaler + PCA on ID training features ``[n, D]`` (flattened); keep ``dim``.

  Computed on ``h / max|h|`` and scaled back (the PCA directions are scale-invariant),
  so features near 1e30 do not overflow. Needs ``n >= 1`` and ``1 <= dim <= D``.
  """
  checks.non_empty('train_feats', train_feats)
  checks.real('train_feats', train_feats)
  num_features = math.prod(jnp.shape(train_feats)[1:])
  if not 1 <= dim <= num_features:
    raise ValueError(f'neco_fit: dim must be in [1, D={num_features}] (feature size), got {dim}.')
  return _neco_fit(train_feats, dim)


@functools.partial(jax.jit, static_argnames=('dim',))
@placement.replicate_inputs
def _neco_fit(train_feats: jax.Array, dim: int) -> NecoParams:
  h = jnp.reshape(jnp.asarray(train_feats, jnp.float32), (train_feats.shape[0], -1))
  unit = numerics.max_abs_scale(h)[0, 0]
  h = h / unit
  mean = jnp.mean(h, axis=0)
  var = jnp.var(h, axis=0)
  # sklearn's _is_constant_feature: a constant column's float32 variance is rounding.
  n, eps = h.shape[0], jnp.finfo(h.dtype).eps
  constant = var <= n * eps * var + (n * mean * eps) ** 2
  scale = jnp.where(constant, 1.0 / unit, jnp.sqrt(var))  # constant -> 1 in original units
  z = (h - mean) / scale
  z = z - jnp.mean(z, axis=0)
  cov = jnp.matmul(z.T, z, precision=_HI) / z.shape[0]
  with jax.default_matmul_precision('highest'):
    evals, evecs = jnp.linalg.eigh(cov)
  order = jnp.argsort(-evals)[:dim]
  return NecoParams(
    mean=mean * unit,
    scale=scale * unit,
    components=evecs[:, order],
    explained_variance=evals[order],
  )


@jax.jit
@placement.replicate_inputs
def neco_score(params: NecoParams, feats: jax.Array, logits: jax.Array | None = None) -> jax.Array:
  """``||V_d^T z|| / ||z||`` per sample (``[n]``), times ``max logits`` if ``logits`` given.

  Each ``z`` is rescaled by its own ``max|z|`` first (the ratio is scale-invariant).
  """
  checks.real('feats', feats)
  h = jnp.reshape(jnp.asarray(feats, jnp.float32), (feats.shape[0], -1))
  z = (h - params.mean) / params.scale
  z = z / numerics.max_abs_scale(z, -1)
  proj = jnp.matmul(z, params.components, precision=_HI)
  score = jnp.linalg.norm(proj, axis=1) / jnp.maximum(jnp.linalg.norm(z, axis=1), 1e-30)
  if logits is not None:
    score = score * jnp.max(logits, axis=1)
  return score


def _nan_if_any_nan(value: jax.Array, *scores: jax.Array) -> jax.Array:
  bad = jnp.any(jnp.stack([jnp.any(jnp.isnan(s)) for s in scores]))
  return jnp.where(bad, jnp.nan, value)


def _check_scores(id_scores, ood_scores) -> None:
  checks.non_empty('id_scores', id_scores)
  checks.non_empty('ood_scores', ood_scores)
  checks.real('id_scores', id_scores)
  checks.real('ood_scores', ood_scores)


def _sorted_with_groups(id_scores, ood_scores, positive_is_id: bool):
  """Concatenate, sort by descending detection score and mark tie groups.

  Returns (is_pos, group_end, tps, fps, start) in sorted order: cumulative positives
  / negatives, whether an index closes its tie group and the index where it starts.
  """
  s = jnp.concatenate([jnp.asarray(id_scores, jnp.float32), jnp.asarray(ood_scores, jnp.float32)])
  lab = jnp.concatenate([jnp.ones(id_scores.shape[0], bool), jnp.zeros(ood_scores.shape[0], bool)])
  if not positive_is_id:
    s, lab = -s, ~lab
  order = jnp.argsort(-s, stable=True)
  s, is_pos = s[order], lab[order].astype(jnp.float32)
  n = s.shape[0]
  idx = jnp.arange(n)
  new_group = jnp.concatenate([jnp.ones(1, bool), s[1:] != s[:-1]])
  group_end = jnp.concatenate([s[1:] != s[:-1], jnp.ones(1, bool)])
  start = jax.lax.cummax(jnp.where(new_group, idx, 0))
  tps = jnp.cumsum(is_pos)
  fps = (idx + 1) - tps
  return is_pos, group_end, tps, fps, start


@jax.jit
@placement.replicate_inputs
def auroc(id_scores: jax.Array, ood_scores: jax.Array) -> jax.Array:
  """AUROC with mid-rank tie handling (== ``sklearn.roc_auc_score``); NaN if any NaN."""
  _check_scores(id_scores, ood_scores)
  s = jnp.concatenate([jnp.asarray(id_scores, jnp.float32), jnp.asarray(ood_scores, jnp.float32)])
  n_pos, n_neg = id_scores.shape[0], ood_scores.shape[0]
  order = jnp.argsort(s, stable=True)
  ss = s[order]
  n = ss.shape[0]
  idx = jnp.arange(n)
  new_group = jnp.concatenate([jnp.ones(1, bool), ss[1:] != ss[:-1]])
  group_end = jnp.concatenate([ss[1:] != ss[:-1], jnp.ones(1, bool)])
  start = jax.lax.cummax(jnp.where(new_group, idx, 0))
  end = jnp.flip(jax.lax.cummin(jnp.flip(jnp.where(group_end, idx, n))))
  mid_rank = (start + end) / 2.0 + 1.0  # 1-based
  ranks = jnp.zeros(n).at[order].set(mid_rank)
  rank_sum = jnp.sum(ranks[:n_pos])
  value = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
  return _nan_if_any_nan(value, s)


def _average_precision(id_scores, ood_scores, positive_is_id: bool) -> jax.Array:
  is_pos, group_end, tps, fps, start = _sorted_with_groups(id_scores, ood_scores, positive_is_id)
  n_pos = tps[-1]
  tp_before = jnp.where(start > 0, tps[jnp.maximum(start - 1, 0)], 0.0)
  precision = tps / (tps + fps)
  gain = jnp.where(group_end, (tps - tp_before) * precision, 0.0)
  return _nan_if_any_nan(jnp.sum(gain) / n_pos, id_scores, ood_scores)


@jax.jit
@placement.replicate_inputs
def aupr_in(id_scores: jax.Array, ood_scores: jax.Array) -> jax.Array:
  """Average precision with ID as the positive class (== sklearn average_precision_score)."""
  _check_scores(id_scores, ood_scores)
  return _average_precision(id_scores, ood_scores, positive_is_id=True)


@jax.jit
@placement.replicate_inputs
def aupr_out(id_scores: jax.Array, ood_scores: jax.Array) -> jax.Array:
  """Average precision with OOD as the positive class, detection score ``-score``."""
  _check_scores(id_scores, ood_scores)
  return _average_precision(id_scores, ood_scores, positive_is_id=False)


@functools.partial(jax.jit, static_argnames=('convention', 'tpr'))
@placement.replicate_inputs
def fpr_at_95_tpr(
  id_scores: jax.Array, ood_scores: jax.Array, *, convention: str = 'neco', tpr: float = 0.95
) -> jax.Array:
  """FPR at ``tpr`` (0.95) TPR; ``convention`` 'neco' (ID positive) or 'openood' (OOD
  positive); see the module docstring. Always record which one was used."""
  _check_scores(id_scores, ood_scores)
  id_scores = jnp.asarray(id_scores, jnp.float32)
  ood_scores = jnp.asarray(ood_scores, jnp.float32)
  if convention == 'neco':
    n_keep = max(int(math.floor(tpr * id_scores.shape[0])), 1)
    thresh = jnp.sort(id_scores)[-n_keep]
    value = jnp.mean((ood_scores >= thresh).astype(jnp.float32))
    return _nan_if_any_nan(value, id_scores, ood_scores)
  if convention == 'openood':
    _, group_end, tps, fps, _ = _sorted_with_groups(id_scores, ood_scores, positive_is_id=False)
    n_pos, n_neg = tps[-1], fps[-1]
    reached = group_end & (tps / n_pos >= tpr)
    first = jnp.argmax(reached)
    return _nan_if_any_nan(fps[first] / n_neg, id_scores, ood_scores)
  raise ValueError(f"convention must be 'neco' or 'openood', got {convention!r}")


def ood_metrics(
  id_scores: jax.Array, ood_scores: jax.Array, *, fpr_convention: str = 'neco'
) -> dict:
  """AUROC, AUPR-In, AUPR-Out and FPR@95 (key names say the convention)."""
  return {
    'auroc': auroc(id_scores, ood_scores),
    'aupr_in': aupr_in(id_scores, ood_scores),
    'aupr_out': aupr_out(id_scores, ood_scores),
    f'fpr95_{fpr_convention}': fpr_at_95_tpr(id_scores, ood_scores, convention=fpr_convention),
  }
