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
arrays, and one file per step makes undoing a step a single delete. Paths go through
`etils.epath`, so a workdir may be a bucket (gs://...); objects there cannot be appended
to, so on a URI the (small) jsonl file is rewritten at every call instead.

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
import io
import json
import os
import re
from typing import Any, Mapping

from etils import epath
import numpy as np

MONITOR_DIR = 'monitor'
METRICS_FILE = 'metrics.jsonl'
ORDER_FILE = 'order.json'


def _arrays_path(directory: epath.Path, step: int) -> epath.Path:
  return directory / f'arrays_{step:09d}.npz'


def _is_uri(path) -> bool:
  return '://' in os.fspath(path)  # gs://, s3://: objects cannot be appended to


def _npz_key(name: str) -> str:
  return name.replace('/', '|')  # zip member names must not nest


def _read_records(path: epath.Path) -> list[dict[str, Any]]:
  records = []
  if not path.exists():
    return records
  for line in path.read_text().splitlines(keepends=True):
    if not line.endswith('\n'):
      break  # interrupted write: ignore the partial last line
    records.append(json.loads(line))
  return records


def _write_records(path: epath.Path, records: list[dict[str, Any]]) -> None:
  tmp = path.parent / (path.name + '.tmp')
  tmp.write_text(''.join(json.dumps(r) + '\n' for r in records))
  tmp.replace(path)


class MonitorLog:
  """Appends `collapse_metrics` dicts to `<workdir>/monitor/` (see module docstring)."""

  def __init__(self, workdir: str | os.PathLike, start_step: int = 0):
    self.directory = epath.Path(workdir) / MONITOR_DIR
    self.directory.mkdir(parents=True, exist_ok=True)
    self.path = self.directory / METRICS_FILE
    self._records = self._truncate_after(start_step if start_step > 0 else -1)

  def _truncate_after(self, step: int) -> list[dict[str, Any]]:
    """Drops records (and array files) with a step > `step`; returns the kept ones."""
    kept = [r for r in _read_records(self.path) if r['step'] <= step]
    _write_records(self.path, kept)
    for path in self.directory.glob('arrays_*.npz'):
      if int(path.name[7:-4]) > step:
        path.unlink()
    return kept

  def has_order(self) -> bool:
    return (self.directory / ORDER_FILE).exists()

  def write_order(self, order: Mapping[str, list[str]]) -> None:
    """Records the forward order of layers and representations (once per run)."""
    (self.directory / ORDER_FILE).write_text(json.dumps(dict(order)))

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
      buf = io.BytesIO()
      np.savez_compressed(buf, **arrays)
      _arrays_path(self.directory, step).write_bytes(buf.getvalue())
    self._records.append(record)
    if _is_uri(self.path):  # object stores: rewrite the (small) file
      _write_records(self.path, self._records)
    else:
      with self.path.open('a') as f:
        f.write(json.dumps(record) + '\n')


def _natural_key(name: str):
  """'dense_10' after 'dense_9'; 'head' last (fallback when order.json is missing)."""
  parts = re.split(r'(\d+)', name)
  return (name.endswith('head'), [int(p) if p.isdigit() else p for p in parts])


@dataclasses.dataclass
class MonitorHistory:
  """A run's monitor records, one per step (ascending)."""

  directory: epath.Path
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
    return np.asarray(
      [
        float(r.get(name, np.nan)) if not isinstance(r.get(name), list) else np.nan
        for r in self.records
      ],
      np.float64,
    )

  def vector(self, name: str) -> np.ndarray:
    """`[steps, k]` (e.g. the top singular values `sv/logits`); NaN rows when absent."""
    rows = [r.get(name) for r in self.records]
    k = max((len(v) for v in rows if isinstance(v, list)), default=0)
    out = np.full((len(rows), k), np.nan)
    for i, v in enumerate(rows):
      if isinstance(v, list):
        out[i, : len(v)] = v
    return out

  def arrays(self, step: int) -> dict[str, np.ndarray]:
    """The 2-d arrays recorded at `step` ({} when none); a compact run record
    (`experiments/records.py`) keeps them as JSON text instead of `.npz`."""
    path = _arrays_path(self.directory, step)
    if not path.exists():
      text_path = path.with_suffix('.json')
      if text_path.exists():
        return {k: np.asarray(v, np.float32) for k, v in json.loads(text_path.read_text()).items()}
      return {}
    with np.load(io.BytesIO(path.read_bytes())) as z:
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


def read_monitor(workdir: str | os.PathLike) -> MonitorHistory:
  """The monitor history of a run (empty when it has none)."""
  directory = epath.Path(workdir) / MONITOR_DIR
  by_step = {r['step']: r for r in _read_records(directory / METRICS_FILE)}
  order = {}
  if (directory / ORDER_FILE).exists():
    order = json.loads((directory / ORDER_FILE).read_text())
  return MonitorHistory(directory, [by_step[s] for s in sorted(by_step)], order)


def read_event_scalars(
  workdir: str | os.PathLike, prefix: str = ''
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
  for path in sorted(epath.Path(workdir).glob('events.out.tfevents.*')):
    acc = event_accumulator.EventAccumulator(
      os.fspath(path), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    )
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
  return {
    tag: (np.asarray(sorted(d), np.int64), np.asarray([d[s][1] for s in sorted(d)]))
    for tag, d in series.items()
  }


def _keep_latest(d: dict[int, tuple[float, float]], step: int, wall: float, value: float):
  if step not in d or d[step][0] <= wall:
    d[step] = (wall, value)
