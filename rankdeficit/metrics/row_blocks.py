"""Running a computation on each device's block of rows of a row-sharded matrix.

The streamed metrics (``metrics.tsqr``, ``metrics.streamed``) take matrices whose rows
are sharded over one mesh axis (``'data'``, as a data-parallel step shards its batch).
``over_rows(body, args, ...)`` runs ``body`` on every device's block of rows with
``jax.shard_map``, so no row leaves its device; the body combines the blocks with the
collectives below (``psum``, ``pmax``, ...), which are identities when ``axis`` is None.

The mesh comes from the first array (a concrete ``NamedSharding`` naming ``axis``), else
from the context (``jax.set_mesh``; also under ``jit``). Without one, ``body`` runs once
on the whole array with ``axis=None`` (one device, or whatever XLA makes of it under
someone else's ``jit``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.sharding import AxisType
from jax.sharding import NamedSharding

DATA_AXIS = 'data'


def row_mesh(x: Any, axis: str = DATA_AXIS):
  """The mesh whose ``axis`` shards the rows of ``x``, or None (see the module docstring)."""
  if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
    sharding = x.sharding
    if isinstance(sharding, NamedSharding) and axis in sharding.mesh.axis_names:
      return sharding.mesh
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and axis in mesh.axis_names:
    return mesh
  return None


def check_divisible(x: Any, mesh, axis: str) -> None:
  """Raises ValueError unless the rows of ``x`` split evenly over the mesh axis."""
  if mesh is None:
    return
  devices = mesh.shape[axis]
  if x.shape[0] % devices:
    raise ValueError(
      f'{x.shape[0]} rows do not split evenly over the {devices} devices of mesh axis '
      f'{axis!r}; pad the rows (and mask the padding with row_mask).'
    )


def over_rows(
  body: Callable,
  args: tuple,
  *,
  in_specs: tuple,
  out_specs: Any,
  mesh,
  axis: str,
) -> Any:
  """``body(*args, axis=axis)`` on each device's rows (``jax.shard_map`` over ``mesh``), or
  ``body(*args, axis=None)`` on whole arrays when ``mesh`` is None. ``in_specs`` /
  ``out_specs``: ``P(axis)`` for row-sharded arrays, ``P()`` for replicated ones."""
  if mesh is None:
    return body(*args, axis=None)
  return jax.shard_map(
    functools.partial(body, axis=axis), mesh=mesh, in_specs=in_specs, out_specs=out_specs
  )(*_placed(args, in_specs, mesh))


def _placed(args: tuple, in_specs: tuple, mesh) -> tuple:
  """On a mesh with Explicit axes, every input resharded to its spec (shard_map does not
  reshard there: e.g. replicated labels of sharded features). Auto meshes: unchanged."""
  if not any(t == AxisType.Explicit for t in mesh.axis_types):
    return args

  def put(spec, tree):
    return jax.tree.map(lambda a: jax.sharding.reshard(a, NamedSharding(mesh, spec)), tree)

  return tuple(put(spec, arg) for spec, arg in zip(in_specs, args))


def psum(x: Any, axis: str | None) -> Any:
  """Sum over the blocks (identity without an axis)."""
  return x if axis is None else jax.lax.psum(x, axis)


def pmax(x: Any, axis: str | None) -> Any:
  """Maximum over the blocks (identity without an axis)."""
  return x if axis is None else jax.lax.pmax(x, axis)


def varying(x: Any, axis: str | None) -> Any:
  """``x`` (the same on every block) typed as varying over ``axis``, e.g. for the other
  branch of a ``lax.cond`` on the block index (identity without an axis)."""
  return x if axis is None else jax.lax.pcast(x, (axis,), to='varying')


def num_blocks(axis: str | None) -> int:
  """Number of row blocks (devices along ``axis``; 1 without one)."""
  return 1 if axis is None else jax.lax.axis_size(axis)


def block_index(axis: str | None) -> Any:
  """This block's index along ``axis`` (0 without one)."""
  return 0 if axis is None else jax.lax.axis_index(axis)
