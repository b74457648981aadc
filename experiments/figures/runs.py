"""Runs the figures need: paper settings, their CPU stand-ins, their points and loading.

A figure names *paper settings* (`'cifar100/resnet34'`); a preset maps each to a `Setting`
(config module + overrides). `cpu` maps them to stand-ins that fit 2 CPU cores, `paper` to
the paper's own configs. A run lives in `<root>/<setting name>[-<variant>]/T<T>_s<seed>/`,
so figures asking for the same setting share runs. `point` is a run's
`rankdeficit.experiment.Point`, which the drivers (`experiments.paper`, the grids of
`experiments/figures/grid.py`, `experiments.attention_temperature`) hand to
`experiment.run_point` (a killed run resumes, a finished one is skipped, the analysis is made
once); `read_run` reads a run directory (or its compact record) back and never trains.

A setting may instead be `TrainedBy` another driver: its runs are the ones
`experiments.reproduce_table1 --preset=<preset>` trains at a budget where the network trains
(e.g. ResNet-20 on all 50,000 CIFAR-10 images, 30 epochs, 3 seeds), read from that driver's
results directory (run directories, else compact records); the figure drivers never train
them and draw the temperatures and seeds that exist there.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from experiments import records
from rankdeficit import experiment
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import run_dir as run_dir_lib
from rankdeficit.run import storage
from rankdeficit.training import monitor_log

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results')


@dataclasses.dataclass(frozen=True)
class TrainedBy:
  """Runs trained and recorded by `experiments.reproduce_table1 --preset=<preset>`."""

  preset: str  # reproduce_table1 preset, e.g. 'resnet20_cpu'
  experiment: str  # its experiment's run-name prefix, e.g. 'resnet20_c10'
  results: str  # its --outdir, a folder of experiments/results
  temperatures: tuple[float, ...] = (1.0, 100.0)
  seeds: int = 3

  def _path(self, results: str, kind: str, temperature: float, seed: int) -> str:
    name = f'{self.experiment}_T{temperature:g}_s{seed}'
    return os.path.join(results, self.results, kind, name)

  def workdir(self, results: str, temperature: float, seed: int) -> str:
    """The run directory under `results` (normally `RESULTS`)."""
    return self._path(results, 'runs', temperature, seed)

  def record(self, results: str, temperature: float, seed: int) -> str:
    """The compact record under `results` (normally `RESULTS`)."""
    return self._path(results, 'records', temperature, seed)

  @property
  def command(self) -> str:
    return (
      f'python -m experiments.reproduce_table1 --preset={self.preset} '
      f'--outdir=experiments/results/{self.results}'
    )


@dataclasses.dataclass(frozen=True)
class Setting:
  """One model/data/training recipe of a preset."""

  name: str  # run-folder prefix, e.g. 'mlp_c10'
  config: str  # module in configs/
  overrides: tuple[tuple[str, Any], ...] = ()  # dotted config keys
  label: str = ''  # what was run, for captions
  analysis: AnalysisConfig = AnalysisConfig()  # the analyze_run options
  minutes: float = 0.0  # estimated minutes per run (train + analysis) on 2 busy cores
  trained_by: TrainedBy | None = None  # runs of another driver, never trained here


@dataclasses.dataclass(frozen=True)
class Request:
  """The runs a figure needs of one paper setting."""

  paper: str  # paper setting, a key of PAPER_LABELS
  temperatures: tuple[float, ...]
  variant: str = ''  # run-folder suffix of `overrides`
  overrides: tuple[tuple[str, Any], ...] = ()
  analyze: bool = True  # False: the monitor/events suffice (no probes)
  seeds: int | None = None  # default: the command's --seeds
  cpu_temperatures: tuple[float, ...] | None = None  # cheaper grid on the cpu preset


@dataclasses.dataclass
class Run:
  """What a finished run directory holds."""

  workdir: str
  temperature: float
  seed: int
  config: dict
  train_results: dict
  analysis: dict | None
  monitor: monitor_log.MonitorHistory

  def events(self, prefix: str = '') -> dict:
    return records.event_scalars(self.workdir, prefix)


def run_dir(root: str, setting: Setting, request: Request, temperature: float, seed: int) -> str:
  folder = setting.name + (f'-{request.variant}' if request.variant else '')
  return os.path.join(root, folder, f'T{temperature:g}_s{seed}')


def point(
  setting: Setting,
  request: Request,
  temperature: float,
  seed: int,
  *,
  workdir: str,
  data_dir: str | None = None,
) -> experiment.Point:
  """The run of `setting` for `request` at (T, seed) in `workdir`: the setting's and the
  request's overrides, analysed with the setting's options when the request needs probes."""
  overrides = {
    **dict(setting.overrides + request.overrides),
    'temperature': float(temperature),
    'seed': int(seed),
  }
  if data_dir is not None:
    overrides['data_dir'] = data_dir
  analysis = setting.analysis.replace(data_dir=data_dir) if request.analyze else None
  return experiment.Point(setting.config, overrides, workdir, analysis)


def read_run(workdir: str, temperature: float, seed: int) -> Run | None:
  """The run (or its record, `experiments.records`) in `workdir`, or None when it has not
  finished training (`experiment.is_done`)."""
  if not experiment.is_done(workdir):
    return None
  rd = run_dir_lib.RunDir(workdir)
  config = storage.read_json(rd.config_file) if rd.config_file.exists() else {}
  analysis = storage.read_json(rd.analysis_file) if rd.analysis_file.exists() else None
  train_results = experiment.read_train_results(workdir)
  return Run(
    workdir, temperature, seed, config, train_results, analysis, monitor_log.read_monitor(workdir)
  )


def metric(analysis: dict, name: str, convention: str | None = None):
  """kappa / rho in `convention` ('paper', 'post_softmax', 'hidden'), else the default.

  Older analyses have only the default `kappa` / `rho`.
  """
  by = analysis.get(f'{name}_by_convention') or {}
  if convention and convention in by:
    return by[convention]
  return analysis.get(name)


def hidden_layers(probe_accuracy: dict) -> list[str]:
  """Layer names without the final pre-/post-softmax entries."""
  return [k for k in probe_accuracy if k not in ('logits', 'softmax')]
