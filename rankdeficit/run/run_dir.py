"""The layout of a run directory, in one place.

    <workdir>/
      config.json              the resolved config (a copy is sealed in every checkpoint)
      checkpoints/<step>/      orbax checkpoints, sealed by run/integrity.py;
      checkpoints/corrupt/     damaged steps moved aside at restore
      lock                     one live process per workdir (run/workdir_lock.py)
      run_info.json            versions, devices and command of each start (run/runtime.py)
      log<process>.txt         the run log of each process
      events.out.tfevents.*    TensorBoard scalars (CLU's writer)
      monitor/                 the collapse monitor's exact history (training/monitor_log.py)
      analysis/analysis.json   `python -m rankdeficit.analyze` (+ analysis.md and plots)
      train_results.json       the final train/eval metrics: the done-marker (experiment.py)
      sweep_status.json        a sweep point's state (rankdeficit.sweep)
      sweep_job.json           the scheduler job that runs a sweep point
      sweep_heartbeat          the time a sweep job last said it is alive

Every path goes through `storage.workdir_path`, so a workdir may be a bucket (gs://...).
"""

from __future__ import annotations

import dataclasses
import os

from etils import epath

from rankdeficit.run import storage

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'corrupt'
LOCK_FILE = 'lock'
RUN_INFO_FILE = 'run_info.json'
MONITOR_DIR = 'monitor'
ANALYSIS_DIR = 'analysis'
ANALYSIS_FILE = 'analysis.json'
TRAIN_RESULTS_FILE = 'train_results.json'
SWEEP_STATUS_FILE = 'sweep_status.json'
SWEEP_JOB_FILE = 'sweep_job.json'
SWEEP_HEARTBEAT_FILE = 'sweep_heartbeat'


@dataclasses.dataclass(frozen=True)
class RunDir:
  """A run directory: `RunDir(workdir).config_file`, `.checkpoints`, ... (see module doc)."""

  root: epath.Path

  def __init__(self, workdir: str | os.PathLike):
    object.__setattr__(self, 'root', storage.workdir_path(workdir))

  def __fspath__(self) -> str:
    return os.fspath(self.root)

  def __str__(self) -> str:
    return os.fspath(self.root)

  @property
  def config_file(self) -> epath.Path:
    return self.root / CONFIG_FILE

  @property
  def checkpoints(self) -> epath.Path:
    return self.root / CHECKPOINT_DIR

  def checkpoint(self, step: int) -> epath.Path:
    return self.checkpoints / str(step)

  @property
  def corrupt_checkpoints(self) -> epath.Path:
    return self.checkpoints / CORRUPT_DIR

  @property
  def lock_file(self) -> epath.Path:
    return self.root / LOCK_FILE

  @property
  def run_info_file(self) -> epath.Path:
    return self.root / RUN_INFO_FILE

  def log_file(self, process_index: int) -> epath.Path:
    return self.root / f'log{process_index}.txt'

  @property
  def monitor(self) -> epath.Path:
    return self.root / MONITOR_DIR

  @property
  def analysis(self) -> epath.Path:
    return self.root / ANALYSIS_DIR

  @property
  def analysis_file(self) -> epath.Path:
    return self.analysis / ANALYSIS_FILE

  @property
  def train_results_file(self) -> epath.Path:
    return self.root / TRAIN_RESULTS_FILE

  @property
  def sweep_status_file(self) -> epath.Path:
    return self.root / SWEEP_STATUS_FILE

  @property
  def sweep_job_file(self) -> epath.Path:
    return self.root / SWEEP_JOB_FILE

  @property
  def sweep_heartbeat_file(self) -> epath.Path:
    return self.root / SWEEP_HEARTBEAT_FILE
