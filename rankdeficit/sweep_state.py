"""A sweep point's job state, recorded in its run directory and read back (`point_status`).

Moved from rankdeficit/sweep.py unchanged (issue 22), so that the population executor
(rankdeficit/population_runs.py) records its members' states as the submitit jobs do:
`sweep_status.json` (written at start, end and failure by process 0), a heartbeat file
refreshed every HEARTBEAT_S while the point trains, and `sweep_job.json` (written at
submission by rankdeficit/sweep.py). A point is `done` when `experiment.is_done` says so.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

from etils import epath

from rankdeficit import experiment
from rankdeficit.run import run_dir
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock

HEARTBEAT_S = 60
STALE_AFTER_S = 5 * HEARTBEAT_S  # no heartbeat for this long: the job is gone
FINISHED = ('done', 'diverged')
# sacct states of a job that is over (a point whose job is over and never started failed).
_SLURM_ENDED = (
  'BOOT_FAIL',
  'CANCELLED',
  'COMPLETED',
  'DEADLINE',
  'FAILED',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
  'PREEMPTED',
  'REVOKED',
  'TIMEOUT',
)


def write_status(workdir: epath.Path, state: str, **extra) -> None:
  from rankdeficit.run import distributed  # pylint: disable=import-outside-toplevel

  if distributed.is_main_process():
    storage.write_json(
      run_dir.RunDir(workdir).sweep_status_file,
      {'state': state, 'time': time.time(), **extra},
      indent=2,
    )


def _heartbeat(workdir: epath.Path, stop: threading.Event) -> None:
  while not stop.is_set():
    (workdir / run_dir.SWEEP_HEARTBEAT_FILE).write_text(str(time.time()))
    stop.wait(HEARTBEAT_S)


def numbers(results: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in results.items() if isinstance(v, (int, float))}


def start(point: experiment.Point, workdir: epath.Path, stop: threading.Event) -> None:
  """Starts the point's distributed runtime (its config says whether), records `running`
  and keeps the heartbeat until `stop`."""
  from rankdeficit.run import distributed  # pylint: disable=import-outside-toplevel

  distributed.initialize(auto=experiment.build_config(point).distributed)
  write_status(workdir, 'running', job_id=os.environ.get('SLURM_JOB_ID'))
  if distributed.is_main_process():
    threading.Thread(target=_heartbeat, args=(workdir, stop), daemon=True).start()


def point_status(point: experiment.Point) -> dict[str, Any]:
  """{'state': ..., ...} of a point, from its workdir (and its job, once submitted).

  States: `done` (`experiment.is_done`: trained, and analysed when the sweep asks for it;
  with the results of its train_results.json); `not submitted`; `pending` (submitted, not
  started); `running`; `killed` (no heartbeat for STALE_AFTER_S); `failed` (the job recorded
  an error, ended before it started, or recorded `done` without the done-marker);
  `diverged`.
  """
  if experiment.is_done(point.workdir, analysed=point.analysis is not None):
    return {'state': 'done', 'results': numbers(experiment.read_train_results(point.workdir))}
  rd = run_dir.RunDir(point.workdir)
  status_path, job_path = rd.sweep_status_file, rd.sweep_job_file
  status = storage.read_json(status_path) if status_path.exists() else None
  job = storage.read_json(job_path) if job_path.exists() else None
  if job is not None and (status is None or status.get('time', 0) < job.get('time', 0)):
    ended = _ended_before_start(job)  # submitted after the last recorded state
    if ended:
      return {'state': 'failed', 'error': ended, 'job_id': job.get('job_id')}
    return {'state': 'pending', 'job_id': job.get('job_id')}
  if status is None:
    return {'state': 'not submitted'}
  if status['state'] == 'done':  # by a job of older code, or its files were deleted since
    return {'state': 'failed', 'error': _not_done(point)}
  if status['state'] == 'running':
    beat = rd.sweep_heartbeat_file
    last = float(beat.read_text()) if beat.exists() else status['time']
    if time.time() - last > STALE_AFTER_S:
      status['state'] = 'killed'
  return status


def _not_done(point: experiment.Point) -> str:
  rd = run_dir.RunDir(point.workdir)
  missing = rd.analysis_file if experiment.is_done(point.workdir) else rd.train_results_file
  return f'recorded done, but {missing} is missing; resubmit it to finish the run (it resumes)'


def _ended_before_start(job: dict[str, Any]) -> str | None:
  """Why a submitted job that recorded no state is over (None while it may still start):
  submitit's result file holds its error, its local process is gone, or sacct says so."""
  from submitit.core import utils  # pylint: disable=import-outside-toplevel

  job_id = str(job.get('job_id'))
  paths = utils.JobPaths(job['folder'], job_id=job_id, task_id=0)
  if paths.result_pickle.exists():
    try:
      with open(paths.result_pickle, 'rb') as f:
        outcome, value = pickle.load(f)
    except Exception:  # pylint: disable=broad-except  (torn or foreign file)
      outcome, value = 'error', ''
    if outcome == 'error':
      lines = [l for l in str(value).splitlines() if l.strip()] or ['no traceback']
      return f'job {job_id} failed before it started: {lines[-1].strip()[:200]}'
    return f'job {job_id} ended without recording a state; see {paths.stderr}'
  if job.get('executor') == 'local':
    if job.get('host') == socket.gethostname() and not workdir_lock.pid_alive(int(job_id)):
      return f'job {job_id} (local) exited without recording a state; see {paths.stderr}'
    return None
  state = _slurm_state(job_id)
  if state in _SLURM_ENDED:
    return f'SLURM job {job_id} ended {state} before it started; see {paths.stderr}'
  return None


def _slurm_state(job_id: str) -> str | None:
  """sacct's state of `job_id` ('FAILED', ...), or None where sacct cannot tell."""
  if shutil.which('sacct') is None:
    return None
  try:
    out = subprocess.run(
      ['sacct', '-j', job_id, '-X', '-n', '-P', '-o', 'State'],
      capture_output=True,
      text=True,
      timeout=30,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  states = [l.split()[0] for l in out.splitlines() if l.strip()]
  return states[-1] if states else None
