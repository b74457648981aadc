"""A population of runs in one program (issue 22 item 2): members equal single runs, a killed
group resumes every member (realigning members at different steps), mixed groups are refused,
and `python -m rankdeficit.sweep --executor=population` trains the smoke sweep."""

import dataclasses
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys

import pytest

from rankdeficit import experiment
from rankdeficit import population_runs
from rankdeficit import sweep
from rankdeficit.run import checkpointing
from rankdeficit.run import preemption
from rankdeficit.run import run_dir
from rankdeficit.training import population
from rankdeficit.training import population_members
from rankdeficit.training import train

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / 'configs' / 'sweeps' / 'smoke.py'
# At the smoke sweep's learning rate (0.05) even the device count changes the result after
# 20 steps; at 0.005 a member equals its single run up to float summation order.
CALM = {'learning_rate': 0.005, 'steps_per_dispatch': 5}


def smoke_points(root, **overrides) -> list[experiment.Point]:
  """configs/sweeps/smoke.py's points (T in {1, 100}) with `overrides`, not analysed."""
  points = sweep.load_sweep(str(SMOKE), str(root)).points
  return [
    dataclasses.replace(p, overrides={**p.overrides, **overrides}, analysis=None) for p in points
  ]


def train_points(points) -> population.PopulationResult:
  configs = [experiment.build_config(p) for p in points]
  return population.train_population(configs, [p.workdir for p in points], [p.name for p in points])


def _sigterm_after_step(step: int, monkeypatch):
  """From now on the population's dispatch that reaches `step` is followed by a SIGTERM."""
  run = population._run  # pylint: disable=protected-access

  def dispatch_then_sigterm(group, states, keys, knobs, num_steps):
    out = run(group, states, keys, knobs, num_steps)
    if group.steps_trained >= step:
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(population, '_run', dispatch_then_sigterm)
  return run


def test_members_equal_their_points_alone_and_a_killed_group_resumes_each(tmp_path, monkeypatch):
  """One scenario (its compilations shared): the smoke points at CALM as a population,
  uninterrupted; the same killed at step 5 and resumed with its members at different steps;
  each point trained alone with the single-run path (input_on_device=True)."""
  points = smoke_points(tmp_path / 'whole', **CALM)
  whole = train_points(points)
  assert whole.steps_trained == 20
  killed = smoke_points(tmp_path / 'killed', **CALM)
  run = _sigterm_after_step(5, monkeypatch)
  with pytest.raises(preemption.Stopped) as stopped:
    train_points(killed)
  assert stopped.value.step == 5
  assert [checkpointing.finished_steps(p.workdir) for p in killed] == [[5], [5]]
  monkeypatch.setattr(population, '_run', run)
  # The second member lost its checkpoint: it trains alone to step 5, then both go on.
  shutil.rmtree(run_dir.RunDir(killed[1].workdir).checkpoint(5))
  resumed = train_points(killed)
  assert resumed.steps_trained == 5 + 15
  log = run_dir.RunDir(killed[0].workdir).log_file(0).read_text()
  assert 'Stopped at step 5' in log and 'from step 5 of 20' in log
  for point, member, again in zip(points, whole.outcomes, resumed.outcomes):
    for key in ('eval/loss', 'eval/accuracy', 'train/loss'):
      assert again[key] == pytest.approx(member[key], rel=1e-5), (point.name, key)
    config = experiment.build_config(
      dataclasses.replace(point, overrides={**point.overrides, 'input_on_device': True})
    )
    _, alone = train.train_and_evaluate(config, str(tmp_path / 'alone' / point.name))
    for key in ('eval/loss', 'eval/accuracy'):
      assert member[key] == pytest.approx(alone[key], rel=1e-3), (point.name, key)
    assert member['init/logits_norm'] == pytest.approx(alone['init/logits_norm'], rel=1e-6)
    rd = run_dir.RunDir(point.workdir)  # an ordinary run directory
    assert checkpointing.finished_steps(point.workdir) == [10, 20]
    assert rd.config_file.exists() and rd.log_file(0).exists() and rd.run_info_file.exists()
    assert list(rd.root.glob('events.out.tfevents.*'))
    assert checkpointing.load_config(point.workdir).input_on_device
  assert whole.outcomes[0]['eval/accuracy'] > whole.outcomes[1]['eval/accuracy']  # T=1 learns


def test_members_differing_in_another_field_are_refused(tmp_path):
  points = smoke_points(tmp_path)
  wide = dataclasses.replace(points[1], overrides={**points[1].overrides, 'model.width': 128})
  with pytest.raises(ValueError, match=r"differs from .* in 'model\.width' \(128 vs 256\)"):
    population_runs.check_group([points[0], wide])
  with pytest.raises(ValueError, match=r"'model\.width'"):
    train_points([points[0], wide])
  assert not os.path.exists(points[0].workdir)  # refused before anything is written
  seeds = [dataclasses.replace(p, overrides={**p.overrides, 'seed': 3}) for p in points]
  groups = population_runs.group_points([points[0], wide, *seeds])
  assert [[p.name for p in g] for g in groups] == [
    [points[0].name, *(p.name for p in seeds)],
    [wide.name],
  ]
  flipped = dataclasses.replace(points[0], overrides={**points[0].overrides, 'augment': 'cifar'})
  population_members.check_group([experiment.build_config(flipped)], ['x'])
  bad = dataclasses.replace(points[0], overrides={**points[0].overrides, 'augment': 'vit'})
  with pytest.raises(ValueError, match='population: .*input_on_device'):
    population_runs.check_group([bad])


def _sweep_main(**flag_values) -> int | str | None:
  """`python -m rankdeficit.sweep` in this process (its flags set, then removed again)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel

  before, level = set(flags.FLAGS), logging.get_absl_logger().level
  sweep._define_flags()  # pylint: disable=protected-access
  flags.FLAGS.mark_as_parsed()  # not FLAGS(argv): rankdeficit.main's --config is required
  for name, value in flag_values.items():
    setattr(flags.FLAGS, name, value)
  try:
    with pytest.raises(SystemExit) as exit_:
      sweep.main([])
  finally:
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:  # --sweep is required: it would stop other CLIs
      delattr(flags.FLAGS, name)
    logging.get_absl_logger().setLevel(level)  # unparse_flags resets absl's verbosity
  return exit_.value.code


def test_population_executor_trains_the_smoke_sweep_and_status_shows_it_done(tmp_path, capsys):
  code = _sweep_main(sweep=str(SMOKE), root=str(tmp_path), executor='population')
  out = capsys.readouterr().out
  assert code is None and '1 population(s) trained, 0 failed.' in out, (code, out)
  status = subprocess.run(
    [
      sys.executable,
      '-m',
      'rankdeficit.sweep',
      f'--sweep={SMOKE}',
      f'--root={tmp_path}',
      '--status',
    ],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=str(REPO)),
    capture_output=True,
    text=True,
    check=True,
  )
  assert '2 done' in status.stdout, status.stdout
  for point in sweep.load_sweep(str(SMOKE), str(tmp_path)).points:
    assert experiment.is_done(point.workdir, analysed=True)
    marker = experiment.read_train_results(point.workdir)
    assert marker['population_size'] == 2 and marker['num_train'] > 0
    assert sweep.point_status(point)['state'] == 'done'
