"""Experiment points trained as populations: grouping, done-markers, analysis, sweep states.

`experiment.run_point` for a group of points (rankdeficit/training/population.py trains
them as one program):

* `group_points(points)`: the points that may share a program, in groups, in the order
  they come: same config but for `population_members.VARYING_FIELDS` (seed, temperature
  and its schedule, init scheme, learning rate). A group of one is a population of one.
* `run_group(points, stage=..., force=..., on_finished=...)`: trains the group's unfinished
  points as one population (`population.train_population`; each resumes its own latest
  checkpoint), writes each member's done-marker `train_results.json` (its metrics, the
  group's `train_seconds`, `num_train`, and `population_size`), then hands every point to
  `experiment.run_point`, which, the point being trained, analyses it unless analysed and
  calls `on_finished`, exactly as for a point trained alone. So `--status`, `analyze`,
  `experiments.aggregate` and the figure code see ordinary runs.
* `run_sweep(points)`: `python -m rankdeficit.sweep --executor=population`: every group in
  this process, each member's job state recorded as a submitit job records its point's
  (rankdeficit/sweep_state.py): `running` with a heartbeat, then `done`, `diverged` or
  `failed`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from absl import logging

from rankdeficit import experiment
from rankdeficit import sweep_state
from rankdeficit.run import preemption
from rankdeficit.run import storage
from rankdeficit.training import population
from rankdeficit.training import population_members

Outcome = experiment.Finished | FloatingPointError | None


def group_points(points: Sequence[experiment.Point]) -> list[list[experiment.Point]]:
  """`points` in groups that may train as one population, in order of first appearance;
  ValueError (naming the point and field) for a point whose config cannot be built."""
  groups: dict[str, list[experiment.Point]] = {}
  for point in points:
    try:
      config = experiment.build_config(point)
    except ValueError as e:
      raise ValueError(f'point {point.name}: {e}') from e
    key = f'{population_members.group_key(config)}|{point.num_processes}'
    groups.setdefault(key, []).append(point)
  return list(groups.values())


def check_group(points: Sequence[experiment.Point]) -> None:
  """ValueError (one line, naming the point and the field) unless `points` may train as one
  population (`population_members.check_group`), before anything is written."""
  configs = [experiment.build_config(p) for p in points]
  population_members.check_group(configs, [p.name for p in points])
  for point in points:
    if point.num_processes > 1:
      raise ValueError(f'population: {point.name} asks for {point.num_processes} processes.')


def train_group(points: Sequence[experiment.Point]) -> population.PopulationResult:
  """Trains `points` as one population and writes each finished member's done-marker."""
  check_group(points)
  configs = [experiment.build_config(p) for p in points]
  for point, config in zip(points, configs):
    if point.analysis is not None:
      experiment.check_analysis_data(config, point.analysis)
    storage.workdir_path(point.workdir).mkdir(parents=True, exist_ok=True)
  logging.info('Training a population of %d: %s', len(points), ', '.join(p.name for p in points))
  result = population.train_population(
    configs, [p.workdir for p in points], [p.name for p in points]
  )
  for point, config, outcome in zip(points, configs, result.outcomes):
    if isinstance(outcome, FloatingPointError):
      continue
    marker = {k: float(v) for k, v in outcome.items()}
    marker['train_seconds'] = result.train_seconds
    # experiment.py's private pieces of its own marker (see the report of issue 22).
    marker['num_train'] = experiment.num_train(config)
    marker['population_size'] = len(points)
    experiment.write_marker(point.workdir, marker)
  return result


def run_group(
  points: Sequence[experiment.Point],
  *,
  stage: str = 'all',
  force: bool = False,
  on_finished: Callable[[experiment.Finished], Any] | None = None,
) -> list[Outcome]:
  """`experiment.run_point` for every point of one group, the training done as one
  population: unfinished points (all with `force`) train together, then each point is
  analysed unless analysed (re-analysed with `force`) and handed to `on_finished`.

  Returns, per point: its `experiment.Finished`, its FloatingPointError (diverged: no
  marker), or None (`stage='analyze'` found it unfinished).
  """
  if stage not in experiment.STAGES:
    raise ValueError(f'stage={stage!r}; choose from {experiment.STAGES}.')
  todo = [p for p in points if stage != 'analyze' and (force or not experiment.is_done(p.workdir))]
  diverged = {}
  if todo:
    result = train_group(todo)
    diverged = {
      p.name: o for p, o in zip(todo, result.outcomes) if isinstance(o, FloatingPointError)
    }
  after = 'analyze' if force and stage == 'all' else stage
  return [
    diverged.get(p.name)
    or experiment.run_point(
      p, stage=after, force=force and after == 'analyze', on_finished=on_finished
    )
    for p in points
  ]


def _record_outcomes(points, outcomes: Sequence[Outcome]) -> None:
  for point, outcome in zip(points, outcomes):
    workdir = storage.workdir_path(point.workdir)
    if isinstance(outcome, FloatingPointError):
      sweep_state.write_status(workdir, 'diverged', error=str(outcome))
    elif outcome is not None:
      sweep_state.write_status(workdir, 'done', results=sweep_state.numbers(outcome.train_results))


def _run_recorded(points: Sequence[experiment.Point]) -> bool:
  """`run_group` with every member's job state recorded; False when the group failed."""
  stop = threading.Event()
  workdirs = [storage.workdir_path(p.workdir) for p in points]
  try:
    for point, workdir in zip(points, workdirs):
      workdir.mkdir(parents=True, exist_ok=True)
      sweep_state.start(point, workdir, stop)
    outcomes = run_group(points)
  except preemption.Stopped as e:
    for workdir in workdirs:
      sweep_state.write_status(workdir, 'failed', error=str(e))
    raise
  except Exception as e:  # pylint: disable=broad-except  (recorded; the next group goes on)
    logging.exception('Population of %s failed.', ', '.join(p.name for p in points))
    for workdir in workdirs:
      sweep_state.write_status(workdir, 'failed', error=f'{type(e).__name__}: {e}')
    return False
  finally:
    stop.set()
  _record_outcomes(points, outcomes)
  return True


def run_sweep(points: Sequence[experiment.Point]) -> tuple[int, int]:
  """Trains `points` (a sweep's points still to do) group by group in this process;
  returns (groups, groups that failed). Every group is checked first (`check_group`:
  ValueError before anything trains); a failed group is recorded and the next one goes on;
  SIGTERM/SIGINT stop the sweep (`preemption.Stopped`) after the members saved."""
  groups = group_points(points)
  for group in groups:
    check_group(group)
  failed = 0
  for group in groups:
    failed += not _run_recorded(group)
  return len(groups), failed
