"""Data parallelism over a `jax.sharding.Mesh` with a single `data` axis.

Parameters and optimizer state are replicated; the batch is split along its leading axis.
The same code runs on one CPU, eight GPUs or a multi-host TPU pod: under `jax.jit` XLA
inserts the gradient all-reduce, and BatchNorm's batch statistics (a mean over the sharded
axis) are global automatically.
"""

from typing import Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, metrics)."""
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the `data` axis, other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Turns host-local numpy batches into global arrays sharded on the `data` axis.

  Each process passes its own slice; the global batch is their concatenation in process
  order (`jax.make_array_from_process_local_data`), so no host ever holds the whole batch.
  """
  sharding = data_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )
