"""The analysis's host-memory plan: the layers split into consecutive groups whose features
over every split fit a budget, each group one extraction pass (`memory_plan`)."""

from __future__ import annotations

from absl import logging
import numpy as np

from rankdeficit.analysis import extraction


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


def plan_layer_groups(widths: dict[str, int], rows: int, budget_bytes: int) -> list[list[str]]:
  """Consecutive layers packed so that each group's float32 features fit the budget.

  Args:
    widths: kept coordinates per layer, in forward order.
    rows: examples over all splits (`sum(split_rows(...).values())`).
    budget_bytes: host bytes the features of one group may take; <= 0 = one group.
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


def memory_plan(
  config,
  coords: dict[str, np.ndarray],
  *,
  max_examples: int | None,
  max_train_examples: int | None,
  max_feature_gib: float,
) -> list[list[str]]:
  """Layer groups whose features (every split, float32) fit `max_feature_gib` of host memory.

  Each group is one extraction pass over every split; only one group's features are held
  at a time (0 = one group: every layer at once). The plan is logged.
  """
  rows = split_rows(config, max_examples=max_examples, max_train_examples=max_train_examples)
  widths = {l: len(c) for l, c in coords.items()}
  groups = plan_layer_groups(widths, sum(rows.values()), int(max_feature_gib * 2**30))
  total = 4 * sum(rows.values()) * sum(widths.values())
  logging.info(
    'Analysis memory plan: %s rows (%s) x %d coordinates = %.2f GiB of features '
    'in %d extraction pass(es), at most %.2f GiB at a time: %s',
    sum(rows.values()),
    rows,
    sum(widths.values()),
    total / 2**30,
    len(groups),
    max(4 * sum(rows.values()) * sum(widths[l] for l in g) for g in groups) / 2**30,
    groups,
  )
  return groups
