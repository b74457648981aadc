"""Multi-process JAX: starting the distributed runtime and the few collectives we need.

Every entry point that trains or analyses calls `initialize_from_flags()` first, before
anything touches a device:

* explicit: `--coordinator_address=HOST:PORT --num_processes=P --process_id=i` (one
  command per process; e.g. two shells on one CPU machine, or hand-written launchers);
* automatic: `--config.distributed=True` (training) or `--distributed` (analysis,
  experiments), which calls `jax.distributed.initialize()` with no arguments and lets JAX
  detect the cluster (Cloud TPU pods, SLURM, Open MPI, ...).

Either way the CPU backend's cross-process collectives are switched to gloo (the CPU client
has none by default; the setting does not affect TPU or GPU), so the same command runs a
multi-process job on CPUs: `--xla_force_host_platform_device_count=4` per process and two
processes give one 8-device mesh.

After initialisation every process sees all devices (`jax.devices()`), each feeds its own
slice of every batch (`sharding.shard_batch`), and process 0 alone writes shared files
(`is_main_process()`).
"""

from __future__ import annotations

from typing import Any

from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


def define_flags() -> None:
  """Defines --coordinator_address / --num_processes / --process_id / --distributed.

  Idempotent, so modules that are imported together can all call it.
  """
  if 'coordinator_address' in flags.FLAGS:
    return
  flags.DEFINE_string(
    'coordinator_address',
    None,
    'HOST:PORT of process 0 for a multi-process run (with --num_processes '
    'and --process_id); omit on TPU pods / SLURM and use --distributed.',
  )
  flags.DEFINE_integer('num_processes', None, 'Number of processes of a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'Index of this process, 0 .. num_processes - 1.')
  flags.DEFINE_bool(
    'distributed',
    False,
    'Auto-detect the cluster (TPU pod, SLURM) with jax.distributed.initialize().',
  )


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  auto: bool = False,
) -> bool:
  """Starts the JAX distributed runtime; returns whether it is now running multi-process.

  Args:
    coordinator_address: 'HOST:PORT' reachable by every process (process 0 listens there).
    num_processes: total number of processes.
    process_id: this process's index.
    auto: with no explicit arguments, let `jax.distributed.initialize()` detect the
      cluster. Without either, nothing happens (single process).
  Raises:
    ValueError: an incomplete or inconsistent set of explicit arguments.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(
        '--coordinator_address, --num_processes and --process_id go together; '
        f'got {explicit}. Give all three, or none and --distributed on a '
        'TPU pod / SLURM.'
      )
    if not 0 <= process_id < num_processes:
      raise ValueError(
        f'--process_id={process_id} must be in [0, --num_processes={num_processes}).'
      )
  elif not auto:
    return False
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  # Only the CPU client reads this; TPU/GPU keep their own interconnect collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address is None:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
  logging.info(
    'JAX distributed: process %d/%d, %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return jax.process_count() > 1


def initialize_from_flags(auto: bool = False) -> bool:
  """`initialize` from the flags of `define_flags` (`auto` or --distributed: detect)."""
  fl = flags.FLAGS
  return initialize(
    fl.coordinator_address, fl.num_processes, fl.process_id, auto=auto or fl.distributed
  )


def is_main_process() -> bool:
  """True on the process that writes shared files (config, analysis, tables)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Blocks until every process reaches the barrier `name` (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def broadcast_from_main(value: Any) -> Any:
  """Process 0's value of a numpy pytree, on every process."""
  if jax.process_count() == 1:
    return value
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(value))
