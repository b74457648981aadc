"""Where the metrics' inputs live: sharded arrays, meshes and multiple processes.

Training code hands the metrics arrays sharded along the batch, ``P('data')``, over a
mesh whose axes may be ``Explicit`` (``jax.make_mesh``'s default in jax >= 0.7) or
``Auto``. Under Explicit axes JAX refuses to infer shardings for QR, SVD, ``eigh``,
sorts and contractions over a sharded axis (``ShardingTypeError``), so each metric
that needs the whole matrix first calls ``replicated``: ``jax.sharding.reshard(x,
P())``, an all-gather. On Auto meshes (and unsharded arrays) it does nothing and
XLA's propagation inserts the same collective where it is needed.

Memory: replication materialises the full input on EVERY device, ``n * d * 4`` bytes
in float32 (0.08 GB at 10k x 2048, 0.82 GB at 100k x 2048), on top of the ``1/k``
shard each device already holds, and the SVD/eigh workspace of the metric itself
(see docs/metrics.md). Streaming statistics (``class_stats_update``, ``ncc_update``)
only replicate one batch at a time, so they scale to any dataset size.

Several processes (multi-host): a ``jax.Array`` sharded across processes is one
global array, and everything above works unchanged inside or outside ``jit``
(replication gathers across hosts). Rows that each process holds as its own NumPy
array either become one global array with ``global_batch`` (then any metric) or are
copied to every host with ``gather_from_processes`` (for host-side code).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
import numpy as np

__all__ = ['replicated', 'replicate_inputs', 'global_batch', 'gather_from_processes']


def _is_sharded(x: Any) -> bool:
  """Whether ``x`` is a jax array whose TYPE names a mesh axis (Explicit sharding)."""
  if not isinstance(x, (jax.Array, jax.core.Tracer)):
    return False
  spec = jax.typeof(x).sharding.spec
  return any(entry is not None for entry in spec)


def replicated(tree: Any) -> Any:
  """Every Explicit-sharded array in ``tree`` resharded to fully replicated ``P()``.

  Other leaves (NumPy arrays, Python scalars, Auto-sharded or unsharded arrays) are
  returned unchanged. Works eagerly (also outside ``jax.set_mesh``: the target keeps
  the array's own mesh) and under ``jit``.
  """

  def one(x):
    if not _is_sharded(x):
      return x
    sharding = jax.typeof(x).sharding
    return jax.sharding.reshard(x, sharding.update(spec=P()))

  return jax.tree.map(one, tree)


def replicate_inputs(fn: Callable) -> Callable:
  """Decorator: call ``fn`` with every array argument ``replicated`` first."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    return fn(*replicated(args), **replicated(kwargs))

  return wrapper


def global_batch(
  local_rows: np.ndarray | jax.Array, mesh: jax.sharding.Mesh, spec: P = P('data')
) -> jax.Array:
  """One global array from the rows each process holds (concatenated in process order).

  A thin wrapper of ``multihost_utils.host_local_array_to_global_array``; with one
  process it places ``local_rows`` on ``mesh`` sharded as ``spec``.
  """
  return multihost_utils.host_local_array_to_global_array(local_rows, mesh, spec)


def gather_from_processes(local_rows: np.ndarray | jax.Array) -> np.ndarray:
  """All processes' rows, concatenated along axis 0, as a NumPy array on every host.

  ``multihost_utils.process_allgather(..., tiled=True)``. Use it for host-side code
  (e.g. writing scores to disk); metrics take global arrays directly.
  """
  return np.asarray(multihost_utils.process_allgather(local_rows, tiled=True))
