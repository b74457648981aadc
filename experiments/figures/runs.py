"""Runs the figures need: paper settings, their CPU stand-ins, training and loading.

A figure names *paper settings* (`'cifar100/resnet34'`); a preset maps each to a `Setting`
(config module + overrides). `cpu` maps them to stand-ins that fit 2 CPU cores, `paper` to
the paper's own configs. A run lives in `<root>/<setting name>[-<variant>]/T<T>_s<seed>/`,
so figures asking for the same setting share runs. `ensure_run` trains what is missing
(`train_and_evaluate` resumes a killed run; a run with `train_results.json` is done) and
analyses it once (`analyze_run`); `load_run` reads a run directory back (never trains).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging

from experiments import records
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.training import monitor_log

TRAIN_RESULTS = 'train_results.json'
ANALYSIS = os.path.join('analysis', 'analysis.json')


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


def make_config(
  setting: Setting, request: Request, temperature: float, seed: int, data_dir: str | None
):
  """The setting's config with the preset's and the request's overrides."""
  from experiments import reproduce_table1  # pylint: disable=import-outside-toplevel

  exp = reproduce_table1.Experiment(
    setting.name, setting.config, setting.overrides + request.overrides
  )
  return reproduce_table1.make_config(exp, temperature, seed, data_dir)


def ensure_run(
  workdir: str,
  setting: Setting,
  request: Request,
  temperature: float,
  seed: int,
  *,
  data_dir: str | None,
) -> None:
  """Trains (or resumes) and analyses the run unless already done."""
  from rankdeficit import analyze  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import train

  os.makedirs(workdir, exist_ok=True)
  record = os.path.join(workdir, TRAIN_RESULTS)
  if not os.path.exists(record):
    logging.info('Training %s', workdir)
    t0 = time.perf_counter()
    config = make_config(setting, request, temperature, seed, data_dir)
    if request.analyze:
      check_analysis_data(config)
    _, results = train.train_and_evaluate(config, workdir)
    results = {k: float(v) for k, v in results.items()}
    results['train_seconds'] = time.perf_counter() - t0
    with open(record, 'w') as f:
      json.dump(results, f, indent=2)
  if request.analyze and not os.path.exists(os.path.join(workdir, ANALYSIS)):
    logging.info('Analysing %s', workdir)
    analyze.analyze_run(workdir, setting.analysis.replace(data_dir=data_dir))


def check_analysis_data(config) -> None:
  """Raises DatasetNotFoundError (naming the fix) for a dataset the analysis will read, before
  a run trains for minutes only to fail there."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  for name in {config.dataset, config.ood_dataset, config.ood_detection_dataset} - {''}:
    input_pipeline.dataset_info(name, config.data_dir)


def load_run(workdir: str, temperature: float, seed: int) -> Run | None:
  """The run (or its record, `experiments.records`) in `workdir`, or None when it has not
  finished training."""
  record = os.path.join(workdir, TRAIN_RESULTS)
  if not os.path.exists(record):
    return None
  with open(record) as f:
    train_results = json.load(f)
  config = {}
  if os.path.exists(os.path.join(workdir, 'config.json')):
    with open(os.path.join(workdir, 'config.json')) as f:
      config = json.load(f)
  analysis = None
  if os.path.exists(os.path.join(workdir, ANALYSIS)):
    with open(os.path.join(workdir, ANALYSIS)) as f:
      analysis = json.load(f)
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
