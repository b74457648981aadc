"""Runs the figures need: paper settings, their CPU stand-ins, their points and loading.

A figure names *paper settings* (`'cifar100/resnet34'`); a preset maps each to a `Setting`
(config module + overrides). `cpu` maps them to stand-ins that fit 2 CPU cores, `paper` to
the paper's own configs. A run lives in `<root>/<setting name>[-<variant>]/T<T>_s<seed>/`,
so figures asking for the same setting share runs. `point` is a run's
`rankdeficit.experiment.Point`, which the drivers (`experiments.paper`, the grids of
`experiments/figures/grid.py`, `experiments.attention_temperature`) hand to
`experiment.run_point` (a killed run resumes, a finished one is skipped, the analysis is made
once); `read_run` reads a run directory (or its compact record) back and never trains.
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


@dataclasses.dataclass(frozen=True)
class Setting:
  """One model/data/training recipe of a preset."""

  name: str  # run-folder prefix, e.g. 'mlp_c10'
  config: str  # module in configs/
  overrides: tuple[tuple[str, Any], ...] = ()  # dotted config keys
  label: str = ''  # what was run, for captions
  analysis: AnalysisConfig = AnalysisConfig()  # the analyze_run options
  minutes: float = 0.0  # estimated minutes per run (train + analysis) on 2 busy cores


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
