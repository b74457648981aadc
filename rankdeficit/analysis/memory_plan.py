"""The analysis's device-memory plan: the layers split into consecutive groups whose
features over every split fit each device's budget, one extraction pass per group
(`memory_plan`).

The features live on the devices, rows sharded over the mesh (`analysis.rows`), so what
one device holds is its share of the rows (`device_rows`: the eval batches' padding
included) times the kept coordinates of the group's layers, in float32. The budget per
device (`device_budget`) is `AnalysisConfig.device_memory_fraction` of the device's
memory where the device reports it (GPU, TPU), else `max_feature_gib` (default 6 GiB)
per process shared by its devices (CPU: host RAM); an explicit `max_feature_gib` caps both.
"""

from __future__ import annotations

import math

from absl import logging
import jax
import numpy as np

from rankdeficit.analysis import extraction

DEFAULT_PROCESS_GIB = 6.0  # per process, where devices do not report their memory (CPU)


def split_rows(
  config, *, max_examples: int | None, max_train_examples: int | None
) -> dict[str, int]:
  """Rows of every split `extraction.extract_splits` reads under these caps."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  out = {}
  sources = extraction.split_sources(
    config, max_examples=max_examples, max_train_examples=max_train_examples
  )
  for name, (dataset, split, cap) in sources.items():
    info = input_pipeline.dataset_info(dataset, config.data_dir)
    n = info.num_train if split == 'train' else info.num_test
    out[name] = min(n, cap) if cap else n
  return out


def rows_per_device(num_rows: int, *, batch_size: int, processes: int, local_devices: int) -> int:
  """Rows (padding included) one device holds of a split of `num_rows` examples: each
  process reads a contiguous block (`input_pipeline.host_shard`) in local batches of
  `batch_size / processes`, each padded to a multiple of its `local_devices`."""
  local_batch = batch_size // processes
  bounds = np.linspace(0, num_rows, processes + 1).round().astype(np.int64)
  batches = max(1, math.ceil(int(np.max(np.diff(bounds))) / local_batch))
  return batches * math.ceil(local_batch / local_devices)


def device_rows(rows: dict[str, int], **layout) -> dict[str, int]:
  """`rows_per_device` of every split (`layout`: batch_size, processes, local_devices)."""
  return {name: rows_per_device(n, **layout) for name, n in rows.items()}


def plan_layer_groups(widths: dict[str, int], rows: int, budget_bytes: int) -> list[list[str]]:
  """Consecutive layers packed so that each group's float32 features fit the budget.

  Args:
    widths: kept coordinates per layer, in forward order.
    rows: rows held over all splits (of one device: `sum(device_rows(...).values())`).
    budget_bytes: bytes the features of one group may take; <= 0 = one group.
  Returns:
    Layer groups in forward order; a layer alone over the budget is a group of its own.
  """
  groups: list[list[str]] = []
  used = 0
  for layer, width in widths.items():
    size = 4 * rows * width
    if groups and (budget_bytes <= 0 or used + size <= budget_bytes):
      groups[-1].append(layer)
      used += size
    else:
      groups.append([layer])
      used = size
  return groups


def device_budget(
  max_feature_gib: float | None,
  device_memory_fraction: float,
  *,
  device_bytes: int | None,
  local_devices: int,
) -> int:
  """Bytes of one group's features per device (<= 0: no limit, one group); see the
  module docstring. `device_bytes`: the device's memory, None where it is not reported."""
  if max_feature_gib is not None and max_feature_gib <= 0:
    return 0
  process_gib = DEFAULT_PROCESS_GIB if max_feature_gib is None else max_feature_gib
  cap = max(1, int(process_gib * 2**30 / local_devices))
  if device_bytes:
    device_cap = max(1, int(device_memory_fraction * device_bytes))
    return device_cap if max_feature_gib is None else min(cap, device_cap)
  return cap


def local_device_bytes() -> int | None:
  """Memory of this process's first device (`memory_stats()['bytes_limit']`), or None
  (CPU devices do not report it)."""
  stats = jax.local_devices()[0].memory_stats()
  return int(stats['bytes_limit']) if stats and stats.get('bytes_limit') else None


def memory_plan(
  config,
  coords: dict[str, np.ndarray],
  *,
  max_examples: int | None,
  max_train_examples: int | None,
  batch_size: int,
  max_feature_gib: float | None,
  device_memory_fraction: float = 0.5,
) -> list[list[str]]:
  """Layer groups whose features (every split, float32) fit each device's budget.

  Each group is one extraction pass over every split; only one group's features are held
  at a time. The plan -- rows per device, bytes per device and per process, passes -- is
  logged.
  """
  rows = split_rows(config, max_examples=max_examples, max_train_examples=max_train_examples)
  local = jax.local_device_count()
  per_device = device_rows(
    rows, batch_size=batch_size, processes=jax.process_count(), local_devices=local
  )
  widths = {l: len(c) for l, c in coords.items()}
  budget = device_budget(
    max_feature_gib, device_memory_fraction, device_bytes=local_device_bytes(), local_devices=local
  )
  held = sum(per_device.values())
  groups = plan_layer_groups(widths, held, budget)
  largest = max(4 * held * sum(widths[l] for l in g) for g in groups)
  logging.info(
    'Analysis memory plan: %s rows (%s per device of %d x %d devices) x %d coordinates; '
    'per device %.3f GiB of features in all, at most %.3f GiB at a time (budget %.3f GiB), '
    'per process %.3f GiB at a time; %d extraction pass(es): %s',
    sum(rows.values()),
    per_device,
    jax.process_count(),
    local,
    sum(widths.values()),
    4 * held * sum(widths.values()) / 2**30,
    largest / 2**30,
    budget / 2**30,
    local * largest / 2**30,
    len(groups),
    groups,
  )
  return groups
