"""The paper's figures and tables as a registry: what runs each needs, how it is drawn.

`REGISTRY` maps keys (`figure_1` .. `figure_25`, `table_1`, `table_2`, `table_3`,
`table_6` .. `table_9`, `sweep_<setting>`) to `render.Entry`s, collected from one module
per family (probes, dynamics, alignment, ood, init_norm, synthetic, tables, sweeps).
`python -m experiments.paper` trains what they need and renders them.
"""

from __future__ import annotations

import re

from experiments.figures import alignment
from experiments.figures import dynamics
from experiments.figures import init_norm
from experiments.figures import ood
from experiments.figures import probes
from experiments.figures import sweeps
from experiments.figures import synthetic
from experiments.figures import tables
from experiments.figures.render import Entry


def _order(key: str) -> tuple:
  kind, _, rest = key.partition('_')
  number = re.match(r'\d+', rest)
  return ({'figure': 0, 'table': 1}.get(kind, 2), int(number.group()) if number else 0, rest)


def _collect() -> dict[str, Entry]:
  entries = {}
  for module in (probes, dynamics, alignment, ood, init_norm, synthetic, tables, sweeps):
    for entry in module.ENTRIES:
      if entry.key in entries:
        raise ValueError(f'{entry.key} is registered twice')
      entries[entry.key] = entry
  return {k: entries[k] for k in sorted(entries, key=_order)}


REGISTRY = _collect()
