"""Sweeps on an existing scheduler: one submitit job per point, one workdir per point.

    python -m rankdeficit.sweep --sweep=configs/sweeps/table9.py --executor=slurm [--dry_run]
    python -m rankdeficit.sweep --sweep=configs/sweeps/smoke.py --executor=local
    python -m rankdeficit.sweep --sweep=configs/sweeps/smoke.py --executor=population
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
`--executor=population` trains in this process, on one device, every group of points that
differ only in seed, temperature (schedule), init or learning rate as one jitted program
with the dataset on the device (rankdeficit/population_runs.py); each point still gets its
own run directory, done-marker, analysis and recorded state.
Multi-node points (`nodes` x `ntasks_per_node` > 1 processes) start JAX's distributed
runtime from SLURM's environment (`config.distributed=True`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
import threading
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging

from rankdeficit import experiment
from rankdeficit import sweep_state
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import run_dir
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.sweep_state import point_status

# The checkout holding rankdeficit/ and configs/: relative config paths are read from here.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  (None: jax.device_count()) for 'local', one for 'population'; nodes x gpus_per_node on
  SLURM (nodes x ntasks_per_node CPU processes when the sweep asks for no GPU)."""
  if executor == 'local':
    return None
  if executor == 'population':
    return 1  # a population trains on one device
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


class TrainPoint:
  """The submitit job of one point: `experiment.run_point`, its state recorded."""

  def __init__(self, point: experiment.Point):
    self.point = point

  def __call__(self) -> dict[str, Any]:
    workdir = storage.workdir_path(self.point.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    try:  # every failure, building the config included, is recorded as 'failed'
      sweep_state.start(self.point, workdir, stop)
      finished = experiment.run_point(self.point)
    except FloatingPointError as e:
      sweep_state.write_status(workdir, 'diverged', error=str(e))
      return {'state': 'diverged', 'error': str(e)}
    except BaseException as e:
      sweep_state.write_status(workdir, 'failed', error=f'{type(e).__name__}: {e}')
      raise
    finally:
      stop.set()
    results = sweep_state.numbers(finished.train_results)
    sweep_state.write_status(workdir, 'done', results=results)
    return results

  def checkpoint(self, *args, **kwargs):
    """submitit's preemption/timeout hook: requeue the same point (it resumes)."""
    import submitit  # pylint: disable=import-outside-toplevel

    return submitit.helpers.DelayedSubmission(TrainPoint(self.point))


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
    p
    for p in sweep.points
    if point_status(p)['state'] not in sweep_state.FINISHED + ('running', 'pending')
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


def _run_populations(sweep: Sweep) -> str | int | None:
  """--executor=population (rankdeficit/population_runs.py); main's exit status."""
  from rankdeficit import population_runs  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import preemption  # pylint: disable=import-outside-toplevel

  try:
    groups, failed = population_runs.run_sweep(to_submit(sweep))
  except ValueError as e:
    return f'error: {e}'
  except preemption.Stopped as e:
    return e.exit_code
  print(f'{groups} population(s) trained, {failed} failed.')
  print(status_table(sweep))
  return 1 if failed else None


def _define_flags():
  flags.DEFINE_string('sweep', None, 'Sweep file, configs/sweeps/<name>.py.', required=True)
  flags.DEFINE_enum(
    'executor', 'local', ['local', 'slurm', 'population'], 'Where jobs run (see the docstring).'
  )
  flags.DEFINE_string('root', 'runs/sweeps', "Parent of the sweep's workdirs (gs:// ok).")
  flags.DEFINE_string('submitit_dir', None, 'submitit logs (default <root>/<sweep>/submitit).')
  flags.DEFINE_bool('dry_run', False, 'Print the points, workdirs and job parameters only.')
  flags.DEFINE_bool('status', False, "Print each point's state and exit.")
  flags.DEFINE_bool('wait', None, 'Wait for the jobs (default: yes for local, no for slurm).')


def main(argv):
  del argv
  runtime.set_xla_cpu_flags()  # before JAX starts; local jobs inherit it
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
  if fl.executor == 'population':
    sys.exit(_run_populations(sweep))
  wait = fl.executor == 'local' if fl.wait is None else fl.wait
  jobs = submit(sweep, fl.executor, log_dir, wait=wait)
  print(f'{len(jobs)} job(s) submitted, {len(sweep.points) - len(jobs)} skipped.')
  if wait:
    print(status_table(sweep))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
