"""Sweeps on an existing scheduler: one submitit job per point, one workdir per point.

    python -m rankdeficit.sweep --sweep=configs/sweeps/table9.py --executor=slurm [--dry_run]
    python -m rankdeficit.sweep --sweep=configs/sweeps/smoke.py --executor=local
    python -m rankdeficit.sweep --sweep=configs/sweeps/table9.py --status

A sweep file (configs/sweeps/*.py) defines `get_sweep()` returning a dict:

* `config`: path of the base config (a file of configs/);
* `points`: list of override dicts, dotted config keys -> values, like big_vision's
  `get_hyper` ({'temperature': 100, 'seed': 2}); a point may carry its own `config`;
* `slurm`: sbatch parameters in submitit's `SlurmExecutor` names (`time` in minutes,
  `gpus_per_node`, `cpus_per_task`, `mem`, `nodes`, `ntasks_per_node`, `partition`,
  `array_parallelism`, ...): the whole sweep is one job array;
* `analyze` (optional): `rankdeficit.analyze.analyze_run` options; the job then also writes
  workdir/analysis/, which `python -m experiments.aggregate` turns into tables.

Each point trains in `<root>/<sweep name>/<point name>`, the name built from the overrides
that differ between points (`resnet50_in1k_temperature-100_seed-2`); a job resumes its
point's latest checkpoint, so resubmitting a sweep skips the finished points (done or
diverged) and resumes the killed and failed ones.
A job's state lives in its workdir (see `point_status`): `sweep_status.json` (written at
start, end and failure by process 0) and a heartbeat file refreshed every minute, so a job
killed without notice (preemption, timeout) shows as `killed` rather than `running`.
Multi-node points (`nodes` x `ntasks_per_node` > 1 processes) start JAX's distributed
runtime from SLURM's environment (`config.distributed=True`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
import threading
import time
from typing import Any

from absl import app, flags, logging
from etils import epath

from rankdeficit import storage

STATUS_FILE = 'sweep_status.json'
HEARTBEAT_FILE = 'sweep_heartbeat'
HEARTBEAT_S = 60
STALE_AFTER_S = 5 * HEARTBEAT_S  # no heartbeat for this long: the job is gone
FINISHED = ('done', 'diverged')


@dataclasses.dataclass(frozen=True)
class Point:
  """One training run of a sweep."""
  config: str  # absolute path of the base config file
  overrides: dict[str, Any]
  workdir: str
  analyze: dict[str, Any]
  num_processes: int = 1

  @property
  def name(self) -> str:
    return os.path.basename(self.workdir.rstrip('/'))


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  points: list[Point]
  slurm: dict[str, Any]


def _load_module(path: str):
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  if spec is None or not os.path.isfile(path):
    raise ValueError(f'--sweep={path!r} is not a Python file; give configs/sweeps/<name>.py.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
  spec = _load_module(path).get_sweep()
  name = os.path.splitext(os.path.basename(path))[0]
  base_dir = os.path.dirname(os.path.abspath(path))
  repo = os.path.dirname(os.path.dirname(base_dir))  # configs/sweeps/x.py -> repo root
  slurm = dict(spec.get('slurm', {}))
  processes = int(slurm.get('nodes', 1)) * int(slurm.get('ntasks_per_node', 1))
  points, names = [], set()
  varying = _varying_keys(spec['points'])
  for overrides in spec['points']:
    overrides = dict(overrides)
    config = overrides.get('config', spec['config'])
    config = config if os.path.isabs(config) else os.path.join(repo, config)
    if not os.path.isfile(config):
      raise ValueError(f'Sweep {name}: config {config!r} does not exist.')
    pname = point_name({k: v for k, v in overrides.items() if k in varying})
    if pname in names:
      raise ValueError(f'Sweep {name}: two points are both named {pname!r}; make their '
                       f'overrides differ.')
    names.add(pname)
    workdir = os.fspath(storage.workdir_path(root) / name / pname)
    points.append(Point(config, {k: v for k, v in overrides.items() if k != 'config'},
                        workdir, dict(spec.get('analyze', {})), processes))
  return Sweep(name, points, slurm)


def build_config(point: Point):
  """The point's locked ConfigDict: base config + overrides (unknown keys rejected)."""
  config = _load_module(point.config).get_config()
  for key, value in point.overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ValueError(f'Unknown config field {key!r} in a sweep point; see configs/base.py.')
    node[leaf] = value
  if point.num_processes > 1:
    config.distributed = True
  config.lock()
  return config


def _write_status(workdir: epath.Path, state: str, **extra) -> None:
  from rankdeficit import distributed  # pylint: disable=import-outside-toplevel
  if distributed.is_main_process():
    storage.write_json(workdir / STATUS_FILE,
                       {'state': state, 'time': time.time(), **extra}, indent=2)


def _heartbeat(workdir: epath.Path, stop: threading.Event) -> None:
  while not stop.is_set():
    (workdir / HEARTBEAT_FILE).write_text(str(time.time()))
    stop.wait(HEARTBEAT_S)


class TrainPoint:
  """The submitit job of one point: train (resuming), then analyse; record the state."""

  def __init__(self, point: Point):
    self.point = point

  def __call__(self) -> dict[str, Any]:
    from rankdeficit import analyze, distributed, train  # pylint: disable=import-outside-toplevel
    config = build_config(self.point)
    distributed.initialize(auto=config.distributed)
    workdir = storage.workdir_path(self.point.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_status(workdir, 'running', job_id=os.environ.get('SLURM_JOB_ID'))
    stop = threading.Event()
    if distributed.is_main_process():
      threading.Thread(target=_heartbeat, args=(workdir, stop), daemon=True).start()
    try:
      _, results = train.train_and_evaluate(config, self.point.workdir)
      if self.point.analyze:
        analyze.analyze_run(self.point.workdir, **self.point.analyze)
    except FloatingPointError as e:
      _write_status(workdir, 'diverged', error=str(e))
      return {'state': 'diverged', 'error': str(e)}
    except BaseException as e:
      _write_status(workdir, 'failed', error=f'{type(e).__name__}: {e}')
      raise
    finally:
      stop.set()
    results = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    _write_status(workdir, 'done', results=results)
    return results

  def checkpoint(self, *args, **kwargs):
    """submitit's preemption/timeout hook: requeue the same point (it resumes)."""
    import submitit  # pylint: disable=import-outside-toplevel
    return submitit.helpers.DelayedSubmission(TrainPoint(self.point))


def point_status(point: Point) -> dict[str, Any]:
  """{'state': pending | running | killed | failed | diverged | done, ...} from the workdir."""
  workdir = storage.workdir_path(point.workdir)
  status_path = workdir / STATUS_FILE
  if not status_path.exists():
    return {'state': 'pending'}
  status = storage.read_json(status_path)
  if status['state'] == 'running':
    beat = workdir / HEARTBEAT_FILE
    last = float(beat.read_text()) if beat.exists() else status['time']
    if time.time() - last > STALE_AFTER_S:
      status['state'] = 'killed'
  return status


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
      command=f'{sys.executable} -u -m submitit.core._submit {log_dir}', folder=log_dir,
      map_count=num_points, **params)


def to_submit(sweep: Sweep) -> list[Point]:
  """Points that need a job: pending, killed and failed ones (running/finished skipped)."""
  return [p for p in sweep.points
          if point_status(p)['state'] not in FINISHED + ('running',)]


def submit(sweep: Sweep, executor: str, log_dir: str, *, wait: bool = False) -> list:
  """Submits one job per point still to do (as one array); returns the submitit jobs."""
  points = to_submit(sweep)
  if not points:
    return []
  ex = _executor(sweep, executor, log_dir)
  jobs = ex.submit_array([TrainPoint(p) for p in points])
  for point, job in zip(points, jobs):
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
      detail = ', '.join(f'{k}={res[k]:.4g}' for k in ('eval/accuracy', 'eval/solution_rank')
                         if k in res)
    elif 'error' in status:
      detail = status['error'][:120]
    lines.append(f'  {status["state"]:9s} {point.name:40s} {detail}')
  lines.append('  ' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())))
  return '\n'.join(lines)


def _define_flags():
  flags.DEFINE_string('sweep', None, 'Sweep file, configs/sweeps/<name>.py.', required=True)
  flags.DEFINE_enum('executor', 'local', ['local', 'slurm'], 'Where jobs run.')
  flags.DEFINE_string('root', 'runs/sweeps', 'Parent of the sweep\'s workdirs (gs:// ok).')
  flags.DEFINE_string('submitit_dir', None, 'submitit logs (default <root>/<sweep>/submitit).')
  flags.DEFINE_bool('dry_run', False, 'Print the points, workdirs and job parameters only.')
  flags.DEFINE_bool('status', False, 'Print each point\'s state and exit.')
  flags.DEFINE_bool('wait', None, 'Wait for the jobs (default: yes for local, no for slurm).')


def main(argv):
  del argv
  fl = flags.FLAGS
  try:
    sweep = load_sweep(fl.sweep, fl.root)
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
      print(f'\n# job array of {len(todo)} tasks, sbatch script:\n'
            + sbatch_text(sweep, log_dir, len(todo)))
    return
  wait = fl.executor == 'local' if fl.wait is None else fl.wait
  jobs = submit(sweep, fl.executor, log_dir, wait=wait)
  print(f'{len(jobs)} job(s) submitted, {len(sweep.points) - len(jobs)} skipped.')
  if wait:
    print(status_table(sweep))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
