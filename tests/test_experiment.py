"""The one experiment API: a point's config, its done-marker, what is skipped, the hook."""

import dataclasses
import os
from pathlib import Path

import ml_collections
import pytest

from rankdeficit import experiment
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import run_dir
from rankdeficit.run import storage

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / 'configs' / 'quickstart.py')
# A few steps of the offline quickstart (digits: no data_dir) and a tiny analysis.
TINY = {
  'num_train_steps': 4,
  'checkpoint_every_steps': 4,
  'log_every_steps': 4,
  'eval_every_steps': 4,
  'model.width': 32,
  'model.depth': 2,
}
TINY_ANALYSIS = AnalysisConfig.from_overrides(
  {'probe_epochs': 1, 'probe_batch_size': 256, 'max_dims': 64, 'plots': False}
)


def test_build_config_applies_overrides_and_locks():
  point = experiment.Point(QUICKSTART, {'temperature': 100, 'model.width': 512}, '/unused')
  config = experiment.build_config(point)
  assert config.temperature == 100.0 and config.model.width == 512
  assert not config.distributed
  with pytest.raises(AttributeError):
    config.no_such_field = 1  # locked: a typo cannot add a field downstream
  # A module of configs/ is the same config as its file.
  by_module = experiment.build_config(dataclasses.replace(point, config='quickstart'))
  assert by_module.to_dict() == config.to_dict()
  two = experiment.build_config(dataclasses.replace(point, num_processes=2))
  assert two.distributed


@pytest.mark.parametrize(
  'key, value, message',
  [
    ('temprature', 10.0, "Unknown config field 'temprature'"),
    ('model.widht', 8, "Unknown config field 'model.widht'"),
    ('no_such.parent', 1, "Unknown config field 'no_such.parent'"),
    ('temperature.x', 1, "Unknown config field 'temperature.x'"),
    ('num_train_steps', 'ten', "config field 'num_train_steps' cannot be set to 'ten'"),
  ],
)
def test_build_config_refuses_bad_overrides_in_one_line(key, value, message):
  with pytest.raises(ValueError) as e:
    experiment.build_config(experiment.Point(QUICKSTART, {key: value}, '/unused'))
  assert str(e.value).startswith(message) and '\n' not in str(e.value)


def test_a_run_of_older_code_with_its_marker_counts_as_done(tmp_path, monkeypatch):
  _no_training(monkeypatch)
  rd = run_dir.RunDir(tmp_path / 'old')
  rd.root.mkdir()
  storage.write_json(rd.train_results_file, {'eval/accuracy': 0.5, 'train_seconds': 1.0})
  assert experiment.is_done(rd) and not experiment.is_done(rd, analysed=True)
  calls = []
  finished = experiment.run_point(
    experiment.Point(QUICKSTART, TINY, str(rd)), on_finished=calls.append
  )
  assert finished.train_results == {'eval/accuracy': 0.5, 'train_seconds': 1.0}
  assert finished.analysis is None and calls == [finished]


def test_analyze_stage_skips_an_unfinished_run(tmp_path, monkeypatch):
  _no_training(monkeypatch)
  calls = []
  point = experiment.Point(QUICKSTART, TINY, str(tmp_path / 'run'), TINY_ANALYSIS)
  assert experiment.run_point(point, stage='analyze', on_finished=calls.append) is None
  assert calls == [] and not os.path.exists(point.workdir)
  with pytest.raises(ValueError, match='stage'):
    experiment.run_point(point, stage='everything')


def test_a_missing_analysis_dataset_stops_before_training(tmp_path, monkeypatch):
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  _no_training(monkeypatch)
  point = experiment.Point(
    QUICKSTART,
    {**TINY, 'ood_dataset': 'mnist', 'data_dir': str(tmp_path / 'empty')},
    str(tmp_path / 'run'),
    TINY_ANALYSIS,
  )
  with pytest.raises(datasets.DatasetNotFoundError, match='mnist'):
    experiment.run_point(point)
  # The analysis's own OOD choice decides what it reads: '' reads no OOD set.
  no_ood = dataclasses.replace(point, analysis=TINY_ANALYSIS.replace(ood_dataset=''))
  with pytest.raises(AssertionError, match='trained'):  # got past the check to training
    experiment.run_point(no_ood)


def test_a_diverged_run_writes_no_marker(tmp_path, monkeypatch):
  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  def diverge(config, workdir):
    raise FloatingPointError('Non-finite training loss at step 3')

  monkeypatch.setattr(train, 'train_and_evaluate', diverge)
  point = experiment.Point(QUICKSTART, TINY, str(tmp_path / 'run'))
  with pytest.raises(FloatingPointError):
    experiment.run_point(point)
  assert not experiment.is_done(point.workdir)


def _no_training(monkeypatch) -> None:
  """Makes any training or analysis fail the test."""
  from rankdeficit import analyze  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(train, 'train_and_evaluate', _fail('trained'))
  monkeypatch.setattr(analyze, 'analyze_run', _fail('analysed'))


def test_run_point_trains_analyses_records_and_skips_what_is_done(tmp_path, monkeypatch):
  point = experiment.Point(QUICKSTART, TINY, str(tmp_path / 'run'), TINY_ANALYSIS)
  calls = []
  finished = experiment.run_point(point, on_finished=calls.append)
  rd = run_dir.RunDir(point.workdir)
  assert experiment.is_done(point.workdir, analysed=True)
  marker = storage.read_json(rd.train_results_file)
  assert finished.train_results == marker and marker['num_train'] == 1438  # digits' train split
  assert marker['train_seconds'] > 0 and 'eval/accuracy' in marker
  assert all(isinstance(v, float) for k, v in marker.items() if k != 'num_train')
  assert finished.analysis['solution_rank'] >= 1
  assert calls == [finished]  # once, after training and analysis, not per stage

  # Done and analysed: nothing is trained or analysed again.
  _no_training(monkeypatch)
  again = experiment.run_point(point, on_finished=calls.append)
  assert again.train_results == marker and again.analysis == storage.read_json(rd.analysis_file)
  assert len(calls) == 2

  # Only the analysis is missing: it alone is redone.
  storage.workdir_path(rd.analysis).rmtree()
  monkeypatch.undo()
  from rankdeficit.training import train  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(train, 'train_and_evaluate', _fail('trained'))
  redone = experiment.run_point(point)
  assert rd.analysis_file.exists() and redone.analysis['solution_rank'] >= 1
  assert storage.read_json(rd.train_results_file) == marker  # the marker is kept

  # stage='train' on a done run: nothing to do, no analysis and no hook.
  calls.clear()
  trained = experiment.run_point(point, stage='train', on_finished=calls.append)
  assert trained.analysis is None and calls == []


def _fail(what: str):
  def fail(*args, **kwargs):
    raise AssertionError(what)

  return fail


def test_finished_is_the_points_workdir():
  point = experiment.Point('quickstart', {}, '/runs/a/b/')
  assert point.name == 'b'
  assert experiment.Finished(point, {}, None).workdir == '/runs/a/b/'
  assert isinstance(experiment.base_config('quickstart'), ml_collections.ConfigDict)
