"""One way to run an experiment point: config -> train -> analyse -> record.

A `Point` is a base config (a file such as `configs/quickstart.py`, or a module of configs/
such as `'mlp_c10_cpu'`), flat dotted overrides (`{'temperature': 100, 'model.width': 512}`),
the run directory it trains in and, optionally, the analysis to run on it. Every driver
(`rankdeficit.sweep`'s local and SLURM jobs, `experiments/reproduce_table1.py`, the figure
presets, the beyond-the-paper grids) hands its points to `run_point`, which:

  1. builds the config (`build_config`: unknown keys and wrongly typed values are refused
     with a one-line ValueError naming the field; the config is locked);
  2. trains it with `rankdeficit.training.train.train_and_evaluate(config, workdir)`, which
     resumes a killed run from its latest checkpoint;
  3. writes the one done-marker, `train_results.json` (`RunDir(workdir).train_results_file`):
     the final metrics as floats, `train_seconds` and `num_train`;
  4. analyses the run (`rankdeficit.analyze.analyze_run(workdir, point.analysis)`) when the
     point asks for it;
  5. calls `on_finished(Finished)` once, on process 0 (e.g. the repository's
     `experiments/records.py` writing the run's compact record).

A run with the marker is not retrained and an analysed run is not re-analysed (unless
`force`); a trained run whose analysis is missing is only analysed. So calling `run_point`
again continues a call that was killed. `is_done(workdir)` reads the marker: it is the one
answer to "has this run finished?", and run directories written before this module (which
have the same marker) count as finished.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import time
from typing import Any, Callable, Mapping

from absl import logging
import ml_collections

from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import distributed
from rankdeficit.run import run_dir
from rankdeficit.run import storage

# 'all': train and analyse; 'train': train only; 'analyze': analyse runs that finished training.
STAGES = ('all', 'train', 'analyze')


@dataclasses.dataclass(frozen=True)
class Point:
  """One run: a base config with overrides, its run directory and the analysis it asks for."""

  # A config file ('configs/quickstart.py', absolute or relative to the working directory)
  # or a module: 'mlp_c10_cpu' (of configs/) or a dotted module name.
  config: str
  overrides: Mapping[str, Any]  # dotted config keys -> values, applied in order
  workdir: str
  analysis: AnalysisConfig | None = None  # None: train only
  num_processes: int = 1  # > 1: the run starts JAX's distributed runtime

  @property
  def name(self) -> str:
    """The run directory's name."""
    return os.path.basename(self.workdir.rstrip('/'))


@dataclasses.dataclass(frozen=True)
class Finished:
  """A point that finished training: its done-marker and (when asked for) its analysis."""

  point: Point
  train_results: dict[str, Any]
  analysis: dict[str, Any] | None  # None: not asked for, or `stage='train'`

  @property
  def workdir(self) -> str:
    return self.point.workdir


def load_python_file(path: str, *, what: str = 'config ', hint: str = 'a file of configs/'):
  """The module of a Python file (a config or sweep file); ValueError in one line for a
  path that is not one ('<what><path> is not a Python file; give <hint>.')."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  if spec is None or not os.path.isfile(path):
    raise ValueError(f'{what}{path!r} is not a Python file; give {hint}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def base_config(config: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (`*.py`) or module (`'mlp_c10_cpu'`: configs/'s)."""
  if config.endswith('.py'):
    return load_python_file(config).get_config()
  name = config if '.' in config else f'configs.{config}'
  return importlib.import_module(name).get_config()


def _override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets the existing field `key` ('model.width') to `value`; ValueError naming it."""
  *_, leaf = key.split('.')
  node = parent = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ValueError(f'Unknown config field {key!r}; see configs/base.py.')
    parent, node = node, node[part]
  try:
    parent[leaf] = value
  except TypeError as e:  # ml_collections: a value of another type than the field's
    reason = ' '.join(str(e).split())
    raise ValueError(f'config field {key!r} cannot be set to {value!r} ({reason}).') from e


def build_config(point: Point) -> ml_collections.ConfigDict:
  """The point's locked config: its base config with its overrides.

  Raises:
    ValueError: (one line, naming the field) an override of a field the config does not
      have, or a value of another type than the field's.
  """
  config = base_config(point.config)
  for key, value in point.overrides.items():
    _override(config, key, value)
  if point.num_processes > 1:
    config.distributed = True
  config.lock()
  return config


def is_done(workdir: str | os.PathLike, *, analysed: bool = False) -> bool:
  """Whether the run in `workdir` finished training (its done-marker exists) and, with
  `analysed`, was analysed too (analysis/analysis.json)."""
  rd = run_dir.RunDir(workdir)
  return rd.train_results_file.exists() and (not analysed or rd.analysis_file.exists())


def read_train_results(workdir: str | os.PathLike) -> dict[str, Any]:
  """The done-marker of a finished run (FileNotFoundError for an unfinished one)."""
  return storage.read_json(run_dir.RunDir(workdir).train_results_file)


def check_analysis_data(config: ml_collections.ConfigDict, analysis: AnalysisConfig) -> None:
  """Raises DatasetNotFoundError (naming the fix) for a dataset the analysis will read, before
  a run trains for minutes only to fail there."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  data_dir = config.data_dir if analysis.data_dir is None else analysis.data_dir
  ood = config.ood_dataset if analysis.ood_dataset is None else analysis.ood_dataset
  detection = (config.ood_detection_dataset or ood) if ood else ''
  for name in sorted({config.dataset, ood, detection} - {''}):
    input_pipeline.dataset_info(name, data_dir)


def num_train(config: ml_collections.ConfigDict) -> int:
  """Training examples the run drew its batches from (`train_subset` of the split)."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  total = input_pipeline.dataset_info(config.dataset, config.data_dir).num_train
  return min(total, config.train_subset or total)


def write_marker(workdir: str, results: dict[str, float]) -> None:
  """train_results.json, whole or not at all: a torn marker would read as a finished run."""
  path = run_dir.RunDir(workdir).train_results_file
  tmp = path.parent / f'.{path.name}.tmp{os.getpid()}'
  storage.write_json(tmp, results, indent=2)
  tmp.replace(path)


def _train(point: Point) -> dict[str, float]:
  """Trains (or resumes) the point and writes its done-marker; returns the marker."""
  from rankdeficit.training import train as train_lib  # pylint: disable=import-outside-toplevel

  config = build_config(point)
  distributed.initialize(auto=config.distributed)
  if point.analysis is not None:
    check_analysis_data(config, point.analysis)
  storage.workdir_path(point.workdir).mkdir(parents=True, exist_ok=True)
  logging.info('Training %s', point.workdir)
  t0 = time.perf_counter()
  _, results = train_lib.train_and_evaluate(config, point.workdir)
  marker = {k: float(v) for k, v in results.items()}
  marker['train_seconds'] = time.perf_counter() - t0
  marker['num_train'] = num_train(config)
  if distributed.is_main_process():
    write_marker(point.workdir, marker)
  distributed.barrier('train_results_written')
  return marker


def _analyse(point: Point, *, force: bool) -> dict[str, Any]:
  """The point's analysis: analysis.json when it exists (unless `force`), else a new one."""
  from rankdeficit import analyze  # pylint: disable=import-outside-toplevel

  path = run_dir.RunDir(point.workdir).analysis_file
  if not force and path.exists():
    return storage.read_json(path)
  logging.info('Analysing %s', point.workdir)
  return analyze.analyze_run(point.workdir, point.analysis)


def run_point(
  point: Point,
  *,
  stage: str = 'all',
  force: bool = False,
  on_finished: Callable[[Finished], Any] | None = None,
) -> Finished | None:
  """Takes `point` through `stage`: trains it unless done, then analyses it unless analysed.

  Args:
    point: the run.
    stage: 'all'; 'train' (no analysis); 'analyze' (only a run that finished training).
    force: retrain (resuming the latest checkpoint) and re-analyse a finished run.
    on_finished: called once, on process 0, when the point ends finished and (if it asks
      for an analysis) analysed, whether by this call or an earlier one.
  Returns:
    The finished point, or None where `stage='analyze'` found it unfinished.
  Raises:
    ValueError: a bad override (`build_config`) or `stage`.
    FloatingPointError: the run diverged (no marker is written).
  """
  if stage not in STAGES:
    raise ValueError(f'stage={stage!r}; choose from {STAGES}.')
  if stage != 'analyze' and (force or not is_done(point.workdir)):
    _train(point)
  if not is_done(point.workdir):
    logging.info('%s has not finished training: skipped.', point.workdir)
    return None
  wants_analysis = point.analysis is not None and stage != 'train'
  analysis = _analyse(point, force=force) if wants_analysis else None
  finished = Finished(point, read_train_results(point.workdir), analysis)
  complete = point.analysis is None or analysis is not None
  if on_finished is not None and complete and distributed.is_main_process():
    on_finished(finished)
  return finished
