"""Where an analysis keeps its features: rows sharded over the mesh's `data` axis.

Every split of every layer is one global `jax.Array` `[N, k]` whose rows are sharded over
the devices of a 1-D mesh (`analysis_mesh`, the training mesh's `data` axis): each process
holds only the rows it extracted, on its own devices, and no host ever holds a layer's
features. The row order is "device-major": device `j` holds, batch after batch, the rows
of every eval batch that the data-parallel forward pass put on it (`concat_blocks` joins
them without moving a row). `N` counts padding rows (of the last eval batch, and of
batches padded to a multiple of the local device count); `ids [N]` gives each real row's
index in the split's eval order (the order of `input_pipeline.eval_indices`: the same for
any number of processes) and -1 for padding, whose features are zeros.

Everything downstream reduces over rows on the devices (`rankdeficit.metrics.tsqr`,
`.streamed`, `analysis.sharded_probes`); only per-row scalars (NECO scores) come to the host
(`gather_vector`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import numpy as np

from rankdeficit.training import sharding

DATA_AXIS = sharding.DATA_AXIS


def analysis_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The 1-D `data` mesh over every device of every process (or over `devices`)."""
  return sharding.create_mesh(devices)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` (the same value on every process: numpy, or arrays this process can read) on
  every device of `mesh`; each process places its own copy (no cross-host transfer)."""
  replicated = sharding.replicated_sharding(mesh)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == replicated:
      return x
    return jax.make_array_from_process_local_data(replicated, np.asarray(x))

  return jax.tree.map(put, tree)


def local_rows_to_global(mesh: Mesh, local: np.ndarray, fill=0) -> jax.Array:
  """This process's rows `local [b, ...]`, padded with `fill` to a multiple of its device
  count, as rows of one global array sharded over `data` (processes in order)."""
  local = np.asarray(local)
  devices = len(mesh.local_devices)
  pad = (-len(local)) % devices
  if pad:
    local = np.concatenate([local, np.full((pad, *local.shape[1:]), fill, local.dtype)])
  return jax.make_array_from_process_local_data(sharding.data_sharded(mesh), local)


@functools.partial(jax.jit, static_argnames='mesh')
def _concat(pieces, *, mesh):
  spec = P(DATA_AXIS)
  join = jax.shard_map(lambda p: jnp.concatenate(p), mesh=mesh, in_specs=(spec,), out_specs=spec)
  return join(pieces)


def concat_blocks(pieces: Sequence[jax.Array], mesh: Mesh) -> jax.Array:
  """Each device's rows of `pieces` (row-sharded arrays) concatenated on that device: one
  row-sharded array in device-major order, no row moved."""
  return _concat(list(pieces), mesh=mesh)


def _offset_body(ids, offsets):
  shift = offsets[jax.lax.axis_index(DATA_AXIS)]
  return jnp.where(ids >= 0, ids + shift, -1)


@functools.partial(jax.jit, static_argnames='mesh')
def _offset(ids, offsets, *, mesh):
  specs = (P(DATA_AXIS), P())
  return jax.shard_map(_offset_body, mesh=mesh, in_specs=specs, out_specs=P(DATA_AXIS))(
    ids, offsets
  )


def offset_ids(local_ids: jax.Array, counts: np.ndarray, mesh: Mesh) -> jax.Array:
  """Row ids in the split's order from per-process ones: process `p`'s real rows (ids
  `0..counts[p]-1`) follow those of processes `0..p-1`; padding (-1) stays -1."""
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  per_device = np.asarray([starts[d.process_index] for d in mesh.devices.flat], np.int32)
  return _offset(local_ids, replicate(per_device, mesh), mesh=mesh)


def process_counts(count: int) -> np.ndarray:
  """Every process's `count`, in process order (one small all-gather)."""
  if jax.process_count() == 1:
    return np.asarray([count], np.int64)
  return np.asarray(multihost_utils.process_allgather(np.int64(count))).reshape(-1)


def to_host(x: Any) -> np.ndarray:
  """A small replicated or row-sharded array (a metric, per-row scalars, ids) as numpy on
  every host; numbers and numpy arrays pass through."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def gather_vector(x: jax.Array, ids: jax.Array, num_rows: int) -> np.ndarray:
  """A per-row vector `x [N]` (scores: never features) as numpy `[num_rows]` on every
  process, real rows only, in the split's order."""
  if x.ndim != 1:
    raise ValueError(f'gather_vector gathers per-row scalars only, got shape {x.shape}')
  values, rows = to_host(x), to_host(ids)
  keep = rows >= 0
  out = np.empty((num_rows,), values.dtype)
  out[rows[keep]] = values[keep]
  return out


def held_bytes(tree: Any) -> int:
  """Bytes of `tree`'s arrays held on this process's devices (its shards only; an array
  that appears twice, e.g. `det_test` = `ood_test`, counts once)."""
  arrays = {id(x): x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)}
  return sum(s.data.nbytes for x in arrays.values() for s in x.addressable_shards)


@contextlib.contextmanager
def cpu_blas_threads():
  """One BLAS thread per LAPACK call while several CPU devices run at once.

  XLA's CPU devices each run their QR / SVD / eigh (LAPACK, from scipy's OpenBLAS) at the
  same time; OpenBLAS's own thread pool on top oversubscribes the cores: a QR of
  1000 x 512 rows on each of 8 CPU devices over 2 cores took 18 s instead of 0.14 s.
  Accelerators and a single CPU device are left alone.
  """
  if jax.default_backend() != 'cpu' or jax.local_device_count() == 1:
    yield
    return
  try:
    import threadpoolctl  # pylint: disable=import-outside-toplevel
  except ImportError:  # scikit-learn's dependency; without it, nothing to limit
    yield
    return
  # jaxlib loads its LAPACK (scipy's OpenBLAS) at the first decomposition: load it now, so
  # that the limit reaches it.
  jax.block_until_ready(jnp.linalg.qr(jnp.ones((2, 2), jnp.float32)))
  with threadpoolctl.threadpool_limits(1, user_api='blas'):
    yield
