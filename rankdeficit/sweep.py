"""Sweeps on an existing scheduler: one submitit job per point, one workdir per point.

    python -m rankdeficit.sweep --sweep=configs/sweeps/table9.py --executor=slurm [--dry_run]
    python -m rankdeficit.sweep --sweep=configs/sweeps/smoke.py --executor=local
    python -m rankdeficit.sweep --sweep=configs/sweeps/table9.py --status

A sweep file (configs/sweeps/*.py) defines `get_sweep()` returning a dict:

* `config`: path of the base config (a file of configs/); a relative path is read from
  the repository root (the checkout holding rankdeficit/ and configs/), wherever the sweep
  file is;
* `points`: list of override dicts, dotted config keys -> values, like big_vision's
  `get_hyper` ({'temperature': 100, 'seed': 2}); a point may carry its own `config`;
* `slurm`: sbatch parameters in submitit's `SlurmExecutor` names (`time` in minutes,
  `gpus_per_node`, `cpus_per_task`, `mem`, `nodes`, `ntasks_per_node`, `partition`,
  `array_parallelism`, ...): the whole sweep is one job array;
* `analyze` (optional): the analysis options as flat overrides of
  `rankdeficit.analysis.config.AnalysisConfig` (`{'max_train_examples': 100_000,
  'probe_epochs': 10}`; `{}`: the defaults; an unknown key stops the sweep); the job then
  also writes workdir/analysis/, which `python -m experiments.aggregate` turns into tables.

Each point is an `experiment.Point` and trains in `<root>/<sweep name>/<point name>`, the
name built from the overrides that differ between points
(`resnet50_in1k_temperature-100_seed-2`). A job is `experiment.run_point` (config, train,
analyse, done-marker): it resumes its point's latest checkpoint and skips what is done, so
resubmitting a sweep skips the finished points (done or diverged) and resumes the killed
and failed ones.
Before anything is submitted (and for `--dry_run`), every point's config is built
(`experiment.build_config`) and checked (`validation.validate_fields`); a bad point stops
the sweep with one line naming it and the field. A point is `done` when `experiment.is_done`
says so (its train_results.json, and its analysis when the sweep asks for one); the rest of
a job's state lives in its workdir (see `point_status`): `sweep_job.json` (written at
submission: job id, submitit folder), `sweep_status.json` (written at start, end and
failure by process 0) and a heartbeat file refreshed every minute, so a job killed without
notice (preemption, timeout) shows as `killed` rather than `running`, and one that died
before it started (its submitit result, its pid, or SLURM's sacct says so) as `failed`.
Multi-node points (`nodes` x `ntasks_per_node` > 1 processes) start JAX's distributed
runtime from SLURM's environment (`config.distributed=True`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath

from rankdeficit import experiment
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import run_dir
from rankdeficit.run import storage
from rankdeficit.run import workdir_lock

# The checkout holding rankdeficit/ and configs/: relative config paths are read from here.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  points: list[experiment.Point]  # config: an absolute path
  slurm: dict[str, Any]


def point_name(overrides: dict[str, Any]) -> str:
  """A directory name from a point's overrides, in their order: 'temperature-100_seed-2'."""
  parts = []
  for key, value in overrides.items():
    if key == 'config':  # the config file's stem alone: 'resnet50_in1k_temperature-10'
      text = os.path.splitext(os.path.basename(str(value)))[0]
    else:
      text = f'{key}-{value:g}' if isinstance(value, float) else f'{key}-{value}'
    parts.append(re.sub(r'[^A-Za-z0-9_.+-]', '', text.replace('/', '-')))
  return '_'.join(parts) or 'base'


def _varying_keys(points: list[dict[str, Any]]) -> set[str]:
  """Override keys whose value differs between points (all keys for a single point)."""
  if len(points) == 1:
    return set(points[0])
  keys = {k for p in points for k in p}
  return {k for k in keys if len({repr(p.get(k)) for p in points}) > 1}


def load_sweep(path: str, root: str = 'runs/sweeps') -> Sweep:
  """Reads a sweep file; raises ValueError naming the problem."""
  spec = experiment.load_python_file(
    path, what='--sweep=', hint='configs/sweeps/<name>.py'
  ).get_sweep()
  name = os.path.splitext(os.path.basename(path))[0]
  try:
    analysis = (
      None if spec.get('analyze') is None else AnalysisConfig.from_overrides(spec['analyze'])
    )
  except ValueError as e:
    raise ValueError(f'Sweep {name}: {e}') from e
  slurm = dict(spec.get('slurm', {}))
  processes = int(slurm.get('nodes', 1)) * int(slurm.get('ntasks_per_node', 1))
  points, names = [], set()
  varying = _varying_keys(spec['points'])
  for overrides in spec['points']:
    overrides = dict(overrides)
    config = overrides.get('config', spec['config'])
    config = config if os.path.isabs(config) else os.path.join(REPO_ROOT, config)
    if not os.path.isfile(config):
      raise ValueError(
        f'Sweep {name}: config {config!r} does not exist (a relative path is '
        f'read from the repository root {REPO_ROOT}; give an absolute path '
        f'for a config elsewhere).'
      )
    pname = point_name({k: v for k, v in overrides.items() if k in varying})
    if pname in names:
      raise ValueError(
        f'Sweep {name}: two points are both named {pname!r}; make their overrides differ.'
      )
    names.add(pname)
    workdir = os.fspath(storage.workdir_path(root) / name / pname)
    overrides = {k: v for k, v in overrides.items() if k != 'config'}
    points.append(experiment.Point(config, overrides, workdir, analysis, processes))
  return Sweep(name, points, slurm)


def job_devices(sweep: Sweep, executor: str) -> int | None:
  """The devices a job of `sweep` trains on, for the batch-size checks: this machine's
  (None: jax.device_count()) for 'local'; nodes x gpus_per_node on SLURM (nodes x
  ntasks_per_node CPU processes when the sweep asks for no GPU)."""
  if executor == 'local':
    return None
  nodes = int(sweep.slurm.get('nodes', 1))
  gpus = sweep.slurm.get('gpus_per_node')
  if not gpus:
    return nodes * int(sweep.slurm.get('ntasks_per_node', 1))
  try:
    return nodes * int(str(gpus).rsplit(':', 1)[-1])  # 8 or 'a100:8'
  except ValueError:
    return 1  # unknown: only what holds for every device count is checked


def check_points(sweep: Sweep, num_devices: int | None = None) -> None:
  """Builds every point's config and checks it as `rankdeficit.main` does (the checks of
  `validation.validate_fields`; the data and files are checked by each job where it
  runs). Raises ValueError naming the point and the field."""
  from rankdeficit.plan import validation  # pylint: disable=import-outside-toplevel

  for point in sweep.points:
    try:
      validation.validate_fields(experiment.build_config(point), num_devices)
    except ValueError as e:
      raise ValueError(f'sweep {sweep.name}, point {point.name}: {e}') from e


def _write_status(workdir: epath.Path, state: str, **extra) -> None:
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


def _numbers(results: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in results.items() if isinstance(v, (int, float))}


def _start(point: experiment.Point, workdir: epath.Path, stop: threading.Event) -> None:
  """Starts the point's distributed runtime (its config says whether), records `running`
  and keeps the heartbeat until `stop`."""
  from rankdeficit.run import distributed  # pylint: disable=import-outside-toplevel

  distributed.initialize(auto=experiment.build_config(point).distributed)
  _write_status(workdir, 'running', job_id=os.environ.get('SLURM_JOB_ID'))
  if distributed.is_main_process():
    threading.Thread(target=_heartbeat, args=(workdir, stop), daemon=True).start()


class TrainPoint:
  """The submitit job of one point: `experiment.run_point`, its state recorded."""

  def __init__(self, point: experiment.Point):
    self.point = point

  def __call__(self) -> dict[str, Any]:
    workdir = storage.workdir_path(self.point.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    try:  # every failure, building the config included, is recorded as 'failed'
      _start(self.point, workdir, stop)
      finished = experiment.run_point(self.point)
    except FloatingPointError as e:
      _write_status(workdir, 'diverged', error=str(e))
      return {'state': 'diverged', 'error': str(e)}
    except BaseException as e:
      _write_status(workdir, 'failed', error=f'{type(e).__name__}: {e}')
      raise
    finally:
      stop.set()
    results = _numbers(finished.train_results)
    _write_status(workdir, 'done', results=results)
    return results

  def checkpoint(self, *args, **kwargs):
    """submitit's preemption/timeout hook: requeue the same point (it resumes)."""
    import submitit  # pylint: disable=import-outside-toplevel

    return submitit.helpers.DelayedSubmission(TrainPoint(self.point))


def point_status(point: experiment.Point) -> dict[str, Any]:
  """{'state': ..., ...} of a point, from its workdir (and its job, once submitted).

  States: `done` (`experiment.is_done`: trained, and analysed when the sweep asks for it;
  with the results of its train_results.json); `not submitted`; `pending` (submitted, not
  started); `running`; `killed` (no heartbeat for STALE_AFTER_S); `failed` (the job recorded
  an error, ended before it started, or recorded `done` without the done-marker);
  `diverged`.
  """
  if experiment.is_done(point.workdir, analysed=point.analysis is not None):
    return {'state': 'done', 'results': _numbers(experiment.read_train_results(point.workdir))}
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


def _executor(sweep: Sweep, executor: str, log_dir: str):
  """A submitit executor for `executor` ('local' or 'slurm') with the sweep's resources."""
  import submitit  # pylint: disable=import-outside-toplevel

  if executor == 'local':
    ex = submitit.LocalExecutor(folder=log_dir)
    ex.update_parameters(timeout_min=int(sweep.slurm.get('time', 60 * 24)))
    return ex
  ex = submitit.SlurmExecutor(folder=log_dir)
  params = {'job_name': f'rankdeficit_{sweep.name}', 'time': 60 * 24, **sweep.slurm}
  ex.update_parameters(**params)
  return ex


def sbatch_text(sweep: Sweep, log_dir: str, num_points: int) -> str:
  """The sbatch script submitit would submit for the job array (for --dry_run)."""
  from submitit.slurm import slurm  # pylint: disable=import-outside-toplevel

  params = {'job_name': f'rankdeficit_{sweep.name}', 'time': 60 * 24, **sweep.slurm}
  return slurm._make_sbatch_string(  # pylint: disable=protected-access
    command=f'{sys.executable} -u -m submitit.core._submit {log_dir}',
    folder=log_dir,
    map_count=num_points,
    **params,
  )


def to_submit(sweep: Sweep) -> list[experiment.Point]:
  """Points that need a job: not submitted, killed and failed ones (pending, running and
  finished ones are skipped)."""
  return [
    p for p in sweep.points if point_status(p)['state'] not in FINISHED + ('running', 'pending')
  ]


def _record_job(
  point: experiment.Point, job, executor: str, log_dir: str, submitted: float
) -> None:
  """workdir/sweep_job.json: which job runs the point, so `point_status` can tell a job
  that died before it started from one still queued."""
  rd = run_dir.RunDir(point.workdir)
  rd.root.mkdir(parents=True, exist_ok=True)
  storage.write_json(
    rd.sweep_job_file,
    {
      'job_id': str(job.job_id),
      'executor': executor,
      'folder': os.path.abspath(log_dir),
      'host': socket.gethostname(),
      'time': submitted,
    },
    indent=2,
  )


def submit(sweep: Sweep, executor: str, log_dir: str, *, wait: bool = False) -> list:
  """Checks every point (`check_points`: ValueError before anything is submitted), then
  submits one job per point still to do (as one array); returns the submitit jobs."""
  check_points(sweep, job_devices(sweep, executor))
  points = to_submit(sweep)
  if not points:
    return []
  ex = _executor(sweep, executor, log_dir)
  submitted = time.time()  # before the jobs start: any state they record is newer
  jobs = ex.submit_array([TrainPoint(p) for p in points])
  for point, job in zip(points, jobs):
    _record_job(point, job, executor, log_dir, submitted)
    logging.info('%s: job %s -> %s', point.name, job.job_id, point.workdir)
  if wait:
    for job in jobs:
      job.exception()  # blocks; failures are recorded in the point's workdir
  return jobs


def status_table(sweep: Sweep) -> str:
  """One line per point: state, last checkpoint step, key metrics or the error."""
  lines = [f'{sweep.name}: {len(sweep.points)} points']
  counts: dict[str, int] = {}
  for point in sweep.points:
    status = point_status(point)
    counts[status['state']] = counts.get(status['state'], 0) + 1
    detail = ''
    if status['state'] == 'done':
      res = status.get('results', {})
      detail = ', '.join(
        f'{k}={res[k]:.4g}' for k in ('eval/accuracy', 'eval/solution_rank') if k in res
      )
    elif 'error' in status:
      detail = status['error'][:120]
    lines.append(f'  {status["state"]:13s} {point.name:40s} {detail}')
  lines.append('  ' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())))
  return '\n'.join(lines)


def _define_flags():
  flags.DEFINE_string('sweep', None, 'Sweep file, configs/sweeps/<name>.py.', required=True)
  flags.DEFINE_enum('executor', 'local', ['local', 'slurm'], 'Where jobs run.')
  flags.DEFINE_string('root', 'runs/sweeps', "Parent of the sweep's workdirs (gs:// ok).")
  flags.DEFINE_string('submitit_dir', None, 'submitit logs (default <root>/<sweep>/submitit).')
  flags.DEFINE_bool('dry_run', False, 'Print the points, workdirs and job parameters only.')
  flags.DEFINE_bool('status', False, "Print each point's state and exit.")
  flags.DEFINE_bool('wait', None, 'Wait for the jobs (default: yes for local, no for slurm).')


def main(argv):
  del argv
  fl = flags.FLAGS
  try:
    sweep = load_sweep(fl.sweep, fl.root)
    if not fl.status:  # every point, before anything is submitted or printed
      check_points(sweep, job_devices(sweep, fl.executor))
  except ValueError as e:
    sys.exit(f'error: {e}')
  if fl.status:
    print(status_table(sweep))
    return
  log_dir = fl.submitit_dir or os.path.join(os.path.abspath(fl.root), sweep.name, 'submitit')
  if fl.dry_run:
    todo = {p.name for p in to_submit(sweep)}
    for p in sweep.points:
      mark = 'submit' if p.name in todo else 'skip  '
      print(f'{mark} {p.name}: {p.overrides} config={p.config} workdir={p.workdir}')
    if fl.executor == 'slurm':
      print(
        f'\n# job array of {len(todo)} tasks, sbatch script:\n'
        + sbatch_text(sweep, log_dir, len(todo))
      )
    return
  wait = fl.executor == 'local' if fl.wait is None else fl.wait
  jobs = submit(sweep, fl.executor, log_dir, wait=wait)
  print(f'{len(jobs)} job(s) submitted, {len(sweep.points) - len(jobs)} skipped.')
  if wait:
    print(status_table(sweep))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
