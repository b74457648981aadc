"""On-disk history of the train-time collapse monitor, readable without TensorBoard.

Layout, inside the run directory::

  monitor/metrics.jsonl        one JSON object per monitor call: {"step": s,
                               "temperature": T, <scalar name>: float, <spectrum name>:
                               [top_k floats], ...} (names as in `monitor.collapse_metrics`)
  monitor/arrays_<step>.npz    the 2-d arrays of that call (alignment/<layer> [k, k]);
                               <step> zero-padded to 9 digits
  monitor/order.json           {"layers": [Dense/Conv paths], "reps": [representation
                               names]} in forward order (jit returns sorted keys)

Why this rather than the TensorBoard events the CLU writer also gets: the event file
keeps alignment matrices only as 8-bit PNG images and spectra only as bucketed histograms
(the figures need the exact cosines and top singular values), and reading it back means
replaying every event of the run through `EventAccumulator`. JSON lines are append-only
(a crash mid-write costs at most the last, unterminated line, which the reader skips),
diff-able and readable from any language; `.npz` is numpy's own container for named
arrays, and one file per step makes undoing a step a single delete.

Resume: `MonitorLog(workdir, start_step)` drops what a killed run wrote after the
checkpoint it resumes from (records with step > start_step, or everything when
start_step == 0), so a resumed run never holds two records for one step. The reader also
keeps only the last record of a step, so concurrent or hand-merged logs stay readable.

Eval/train scalars stay in the TensorBoard events (written by the training loop);
`read_event_scalars` reads them back with `tensorboard.backend.event_processing`, last
write of a step winning (a resumed run rewrites the steps after its checkpoint).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any, Mapping

import numpy as np

MONITOR_DIR = 'monitor'
METRICS_FILE = 'metrics.jsonl'
ORDER_FILE = 'order.json'


def _arrays_path(directory: str, step: int) -> str:
  return os.path.join(directory, f'arrays_{step:09d}.npz')


def _npz_key(name: str) -> str:
  return name.replace('/', '|')  # zip member names must not nest


def _read_records(path: str) -> list[dict[str, Any]]:
  records = []
  if not os.path.exists(path):
    return records
  with open(path) as f:
    for line in f:
      if not line.endswith('\n'):
        break  # interrupted write: ignore the partial last line
      records.append(json.loads(line))
  return records


class MonitorLog:
  """Appends `collapse_metrics` dicts to `<workdir>/monitor/` (see module docstring)."""

  def __init__(self, workdir: str, start_step: int = 0):
    self.directory = os.path.join(workdir, MONITOR_DIR)
    os.makedirs(self.directory, exist_ok=True)
    self.path = os.path.join(self.directory, METRICS_FILE)
    self._truncate_after(start_step if start_step > 0 else -1)

  def _truncate_after(self, step: int) -> None:
    """Drops records (and array files) with a step > `step`."""
    kept = [r for r in _read_records(self.path) if r['step'] <= step]
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(tmp, self.path)
    for path in glob.glob(os.path.join(self.directory, 'arrays_*.npz')):
      if int(os.path.basename(path)[7:-4]) > step:
        os.remove(path)

  def has_order(self) -> bool:
    return os.path.exists(os.path.join(self.directory, ORDER_FILE))

  def write_order(self, order: Mapping[str, list[str]]) -> None:
    """Records the forward order of layers and representations (once per run)."""
    with open(os.path.join(self.directory, ORDER_FILE), 'w') as f:
      json.dump(dict(order), f)

  def write(self, step: int, metrics: Mapping[str, Any], **extra: float) -> None:
    """Appends one monitor call; `extra` scalars (e.g. temperature) go in the record."""
    record: dict[str, Any] = {'step': int(step)}
    record.update({k: float(v) for k, v in extra.items()})
    arrays = {}
    for name, value in metrics.items():
      value = np.asarray(value)
      if value.ndim == 0:
        record[name] = value.item()
      elif value.ndim == 1:
        record[name] = value.astype(np.float64).tolist()
      else:
        arrays[_npz_key(name)] = value.astype(np.float32)
    if arrays:
      tmp = _arrays_path(self.directory, step) + '.tmp.npz'
      np.savez_compressed(tmp, **arrays)
      os.replace(tmp, _arrays_path(self.directory, step))
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def _natural_key(name: str):
  """'dense_10' after 'dense_9'; 'head' last (fallback when order.json is missing)."""
  parts = re.split(r'(\d+)', name)
  return (name.endswith('head'), [int(p) if p.isdigit() else p for p in parts])


@dataclasses.dataclass
class MonitorHistory:
  """A run's monitor records, one per step (ascending)."""
  directory: str
  records: list[dict[str, Any]]
  order: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  def ordered(self, prefix: str) -> list[str]:
    """Names `<prefix><layer or rep>` in forward order (`prefix` like 'alignment_max/')."""
    names = self.names(prefix)
    known = self.order.get('reps' if prefix.endswith('rep/') else 'layers', [])
    rank = {prefix + n: i for i, n in enumerate(known)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), _natural_key(n)))

  @property
  def steps(self) -> np.ndarray:
    return np.asarray([r['step'] for r in self.records], np.int64)

  def names(self, prefix: str = '') -> list[str]:
    """Record keys starting with `prefix`, in first-seen order."""
    seen: dict[str, None] = {}
    for r in self.records:
      seen.update((k, None) for k in r if k.startswith(prefix) and k != 'step')
    return list(seen)

  def scalar(self, name: str) -> np.ndarray:
    """`[steps]` float64; NaN where a record lacks `name`."""
    return np.asarray([float(r.get(name, np.nan)) if not isinstance(r.get(name), list)
                       else np.nan for r in self.records], np.float64)

  def vector(self, name: str) -> np.ndarray:
    """`[steps, k]` (e.g. the top singular values `sv/logits`); NaN rows when absent."""
    rows = [r.get(name) for r in self.records]
    k = max((len(v) for v in rows if isinstance(v, list)), default=0)
    out = np.full((len(rows), k), np.nan)
    for i, v in enumerate(rows):
      if isinstance(v, list):
        out[i, :len(v)] = v
    return out

  def arrays(self, step: int) -> dict[str, np.ndarray]:
    """The 2-d arrays recorded at `step` ({} when none)."""
    path = _arrays_path(self.directory, step)
    if not os.path.exists(path):
      return {}
    with np.load(path) as z:
      return {k.replace('|', '/'): z[k] for k in z.files}

  def matrices(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, `[steps, k, k]`) of a 2-d metric such as `alignment/<layer>`."""
    steps, mats = [], []
    for step in self.steps:
      a = self.arrays(int(step)).get(name)
      if a is not None:
        steps.append(int(step))
        mats.append(a)
    return np.asarray(steps, np.int64), (np.stack(mats) if mats else np.zeros((0, 0, 0)))


def read_monitor(workdir: str) -> MonitorHistory:
  """The monitor history of a run (empty when it has none)."""
  directory = os.path.join(workdir, MONITOR_DIR)
  by_step = {r['step']: r for r in _read_records(os.path.join(directory, METRICS_FILE))}
  order = {}
  if os.path.exists(os.path.join(directory, ORDER_FILE)):
    with open(os.path.join(directory, ORDER_FILE)) as f:
      order = json.load(f)
  return MonitorHistory(directory, [by_step[s] for s in sorted(by_step)], order)


def read_event_scalars(workdir: str, prefix: str = '') -> dict[str, tuple[np.ndarray,
                                                                         np.ndarray]]:
  """`{tag: (steps, values)}` of the scalars in the run's TensorBoard event files.

  Reads every events file in `workdir` (CLU writes scalars as tensor summaries); for a
  step written twice (a resumed run) the later write wins.
  """
  # Imported here: only readers need TensorBoard.
  # pylint: disable=import-outside-toplevel
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  # pylint: enable=import-outside-toplevel
  series: dict[str, dict[int, tuple[float, float]]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    acc = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in tags.get('tensors', []):
      if not tag.startswith(prefix):
        continue
      for e in acc.Tensors(tag):
        value = tensor_util.make_ndarray(e.tensor_proto)
        if value.size == 1 and value.dtype.kind in 'fiu':
          _keep_latest(series.setdefault(tag, {}), e.step, e.wall_time, float(value))
    for tag in tags.get('scalars', []):
      if tag.startswith(prefix):
        for e in acc.Scalars(tag):
          _keep_latest(series.setdefault(tag, {}), e.step, e.wall_time, float(e.value))
  return {tag: (np.asarray(sorted(d), np.int64), np.asarray([d[s][1] for s in sorted(d)]))
          for tag, d in series.items()}


def _keep_latest(d: dict[int, tuple[float, float]], step: int, wall: float, value: float):
  if step not in d or d[step][0] <= wall:
    d[step] = (wall, value)
