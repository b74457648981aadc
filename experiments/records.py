"""Compact records of finished runs: what the renderers read, without the checkpoints.

A run directory holds checkpoints (megabytes to gigabytes, never committed) next to the
small files every figure and table is drawn from. `write_record` copies those into a
record directory with the same layout, so a record reads back exactly like a run
(`experiments.figures.runs.read_run`) and a fresh clone redraws every figure without
training (`python -m experiments.paper --render_only`):

  config.json, train_results.json       as the run wrote them
  analysis/analysis.json                the analysis (its PNGs are redrawn, not kept)
  monitor/metrics.jsonl, order.json,    the collapse monitor's history (its 2-d arrays
    arrays_<step>.json                  as JSON text, exact float32: no binary files)
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

from rankdeficit.run import run_dir
from rankdeficit.training import monitor_log

SCALARS = 'scalars.json'
# Paths inside the run directory, kept as they are.
FILES = (
  run_dir.CONFIG_FILE,
  run_dir.TRAIN_RESULTS_FILE,
  os.path.join(run_dir.ANALYSIS_DIR, run_dir.ANALYSIS_FILE),
  os.path.join(run_dir.MONITOR_DIR, monitor_log.METRICS_FILE),
  os.path.join(run_dir.MONITOR_DIR, monitor_log.ORDER_FILE),
)


def write_record(workdir: str, dest: str) -> int:
  """Copies the run's record into `dest` (replacing an older one); returns its bytes.

  Raises ValueError when `dest` and `workdir` overlap (replacing `dest` would delete the run).
  """
  run, out = os.path.realpath(workdir), os.path.realpath(dest)
  if os.path.commonpath([run, out]) in (run, out):
    raise ValueError(f'record {dest} overlaps its run directory {workdir}')
  tmp = f'{dest}.tmp{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  for name in FILES:
    if os.path.exists(os.path.join(workdir, name)):
      os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
      shutil.copy2(os.path.join(workdir, name), os.path.join(tmp, name))
  history = monitor_log.read_monitor(workdir)
  for record in history.records:  # arrays as JSON text: no binary files in the repository
    arrays = history.arrays(record['step'])
    if arrays:
      name = os.path.join(tmp, run_dir.MONITOR_DIR, f'arrays_{record["step"]:09d}.json')
      with open(name, 'w') as f:
        json.dump({k: _shortest_float32(v) for k, v in arrays.items()}, f, separators=(',', ':'))
  scalars = event_scalars(workdir)
  os.makedirs(tmp, exist_ok=True)
  with open(os.path.join(tmp, SCALARS), 'w') as f:
    json.dump(
      {
        tag: [steps.tolist(), [float(v) for v in values]]
        for tag, (steps, values) in sorted(scalars.items())
      },
      f,
      separators=(',', ':'),
    )
  shutil.rmtree(dest, ignore_errors=True)
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  os.replace(tmp, dest)
  return record_bytes(dest)


def _shortest_float32(array: np.ndarray) -> list:
  """Nested lists of the shortest decimals that read back as the same float32 values."""
  flat = [
    float(np.format_float_positional(x, unique=True)) for x in np.asarray(array, np.float32).ravel()
  ]
  return np.asarray(flat, np.float64).reshape(array.shape).tolist()


def event_scalars(workdir: str, prefix: str = '') -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """`{tag: (steps, values)}` from a record's scalars.json, else from the run's events."""
  path = os.path.join(workdir, SCALARS)
  if not os.path.exists(path):
    return monitor_log.read_event_scalars(workdir, prefix)
  with open(path) as f:
    saved = json.load(f)
  return {
    tag: (np.asarray(steps, np.int64), np.asarray(values, np.float64))
    for tag, (steps, values) in saved.items()
    if tag.startswith(prefix)
  }


def record_bytes(root: str) -> int:
  """Bytes of every file under `root`."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def flat_record(a: dict) -> dict:
  """An analysis.json (or runs.jsonl line) with NECO and per-convention kappa / rho as
  top-level keys, as runs.jsonl and the tables hold them."""
  rec = dict(a)
  det = a.get('ood_detection')
  if det is not None:  # an analysis; a runs.jsonl record already holds the flat values
    rec.update(neco_auroc=det.get('auroc'), neco_fpr95=det.get('fpr95_neco'))
  for name in ('kappa', 'rho'):
    for conv, value in (a.get(f'{name}_by_convention') or {}).items():
      rec[f'{name}_{conv}'] = value
  return rec


def read_runs(outdir: str) -> dict[tuple, dict]:
  """The runs.jsonl of `reproduce_table1`'s `outdir`: {(experiment, T, seed): record}. A run
  directory is not kept across machines (runs/ is not committed), runs.jsonl is, so a
  point recorded there counts as finished."""
  path = os.path.join(outdir, 'runs.jsonl')
  if not os.path.exists(path):
    return {}
  out = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        rec = flat_record(json.loads(line))
        out[(rec['experiment'], float(rec['temperature']), int(rec['seed']))] = rec
  return out
