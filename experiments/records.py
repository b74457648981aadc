"""Compact records of finished runs: what the renderers read, without the checkpoints.

A run directory holds checkpoints (megabytes to gigabytes, never committed) next to the
small files every figure and table is drawn from. `write_record` copies those into a
record directory with the same layout, so a record reads back exactly like a run
(`experiments.figures.runs.load_run`) and a fresh clone redraws every figure without
training (`python -m experiments.paper --render_only`):

  config.json, train_results.json       as the run wrote them
  analysis/analysis.json                the analysis (its PNGs are redrawn, not kept)
  monitor/metrics.jsonl, order.json,    the collapse monitor's history
    arrays_<step>.npz
  scalars.json                          every TensorBoard scalar of the run:
                                        {tag: [[steps], [values]]}

TensorBoard event files are replaced by `scalars.json` because they also hold images and
histograms the renderers never read, and reading them needs TensorBoard.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

from rankdeficit import monitor_log

SCALARS = 'scalars.json'
FILES = ('config.json', 'train_results.json', os.path.join('analysis', 'analysis.json'),
         os.path.join('monitor', 'metrics.jsonl'), os.path.join('monitor', 'order.json'))


def write_record(workdir: str, dest: str) -> int:
  """Copies the run's record into `dest` (replacing an older one); returns its bytes."""
  tmp = f'{dest}.tmp{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  for name in FILES:
    if os.path.exists(os.path.join(workdir, name)):
      os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
      shutil.copy2(os.path.join(workdir, name), os.path.join(tmp, name))
  monitor = os.path.join(workdir, 'monitor')
  if os.path.isdir(monitor):
    for name in sorted(os.listdir(monitor)):
      if name.startswith('arrays_') and name.endswith('.npz'):
        os.makedirs(os.path.join(tmp, 'monitor'), exist_ok=True)
        shutil.copy2(os.path.join(monitor, name), os.path.join(tmp, 'monitor', name))
  scalars = event_scalars(workdir)
  os.makedirs(tmp, exist_ok=True)
  with open(os.path.join(tmp, SCALARS), 'w') as f:
    json.dump({tag: [steps.tolist(), [float(v) for v in values]]
               for tag, (steps, values) in sorted(scalars.items())}, f, separators=(',', ':'))
  shutil.rmtree(dest, ignore_errors=True)
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  os.replace(tmp, dest)
  return record_bytes(dest)


def event_scalars(workdir: str, prefix: str = '') -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """`{tag: (steps, values)}` from a record's scalars.json, else from the run's events."""
  path = os.path.join(workdir, SCALARS)
  if not os.path.exists(path):
    return monitor_log.read_event_scalars(workdir, prefix)
  with open(path) as f:
    saved = json.load(f)
  return {tag: (np.asarray(steps, np.int64), np.asarray(values, np.float64))
          for tag, (steps, values) in saved.items() if tag.startswith(prefix)}


def is_record(workdir: str) -> bool:
  """A record (not a run): it holds scalars.json and no checkpoints."""
  return os.path.exists(os.path.join(workdir, SCALARS))


def record_bytes(root: str) -> int:
  """Bytes of every file under `root`."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root)
             for f in files)
