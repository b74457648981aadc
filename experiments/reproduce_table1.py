"""Reproduce the paper's Table 1 (kappa / rho / SR, baseline T=1 vs low logit norm T=100).

    python -m experiments.reproduce_table1 --preset=cpu [--seeds=3] \
        [--outdir=experiments/results/table1_cpu] [--data_dir=data/tfds]

For every (experiment, temperature, seed) of the preset, `rankdeficit.experiment.run_point`
trains it into `<outdir>/runs/<exp>_T<T>_s<seed>/` (resumes a killed run; a finished run,
one with train_results.json, is not retrained), analyses it (skipped when its analysis.json
exists, unless --force) and writes its compact record (`experiments.records`: no
checkpoints) to `<outdir>/records/<exp>_T<T>_s<seed>/`; then `experiments.table1`
aggregates mean +- std over seeds into `<outdir>/table1.md` and `<outdir>/table1.csv`,
next to the paper's numbers (SPEC section 5). Every run's analysis is also appended to
`<outdir>/runs.jsonl`, and `<outdir>/probe_profiles.png` draws every setting's per-layer
probe accuracies and effective ranks over seeds (`experiments.table1_plot`).

Presets (`experiments.table1_presets`): smoke, cpu, paper_cpu, factors_cpu, resnet20_cpu,
resnet20_e40_cpu, paper.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging

from experiments import records
from experiments import table1_plot
from experiments.table1 import aggregate
from experiments.table1 import to_markdown
from experiments.table1 import write_runs
from experiments.table1 import write_tables
from experiments.table1_presets import PRESETS
from experiments.table1_presets import Experiment
from rankdeficit import experiment
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import distributed
from rankdeficit.run import run_dir
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.training import monitor_log


def point(
  exp: Experiment,
  temperature: float,
  seed: int,
  *,
  outdir: str,
  data_dir: str | None,
  analysis_overrides: dict | None = None,
) -> experiment.Point:
  """The experiment point of one run: `exp`'s config and overrides at (T, seed), trained in
  `<outdir>/runs/<run_name>`, analysed with `exp.analysis` + `analysis_overrides`."""
  overrides = {**dict(exp.overrides), 'temperature': float(temperature), 'seed': int(seed)}
  if data_dir is not None:
    overrides['data_dir'] = data_dir
  analysis = exp.analysis.replace(data_dir=data_dir, **(analysis_overrides or {}))
  workdir = os.path.join(outdir, 'runs', run_name(exp, temperature, seed))
  return experiment.Point(exp.config, overrides, workdir, analysis)


def make_config(exp: Experiment, temperature: float, seed: int, data_dir: str | None):
  """The run's locked config (`experiment.build_config` of its point)."""
  return experiment.build_config(point(exp, temperature, seed, outdir='', data_dir=data_dir))


def run_name(exp: Experiment, temperature: float, seed: int) -> str:
  return f'{exp.name}_T{temperature:g}_s{seed}'


def run_one(
  exp: Experiment,
  temperature: float,
  seed: int,
  *,
  outdir: str,
  data_dir: str | None,
  force: bool = False,
  analysis_overrides: dict | None = None,
  stage: str = 'all',
) -> dict | None:
  """Trains (or resumes / reuses) and analyses one run; returns its runs.jsonl record.

  `stage='train'` only trains (returns None); `stage='analyze'` only analyses runs that
  finished training (returns None for the others). `analysis_overrides`: flat
  `AnalysisConfig` overrides (`{'probe_epochs': 10}`) applied over `exp.analysis`. The
  compact record goes to `<outdir>/records/<run_name>` (`experiment.run_point`'s hook).
  """
  name = run_name(exp, temperature, seed)
  finished = experiment.run_point(
    point(
      exp,
      temperature,
      seed,
      outdir=outdir,
      data_dir=data_dir,
      analysis_overrides=analysis_overrides,
    ),
    stage=stage,
    force=force,
    on_finished=lambda f: records.write_record(f.workdir, os.path.join(outdir, 'records', name)),
  )
  if finished is None or stage == 'train':
    return None
  return run_record(exp, temperature, seed, finished)


def _init_logits_norm(workdir: str, train_results: dict) -> float | None:
  """The step-0 logits norm: in train_results.json, or (a resumed run) in its events."""
  if 'init/logits_norm' in train_results:
    return train_results['init/logits_norm']
  _, values = monitor_log.read_event_scalars(workdir, 'init/').get('init/logits_norm', ((), ()))
  return float(values[0]) if len(values) else None


def run_record(exp: Experiment, temperature: float, seed: int, finished) -> dict:
  """The runs.jsonl record of a finished, analysed run (`experiment.Finished`)."""
  workdir, train_results = finished.workdir, finished.train_results
  config = storage.read_json(run_dir.RunDir(workdir).config_file)
  rec = records.flat_record(finished.analysis)
  rec.update(
    experiment=exp.name,
    label=exp.label,
    paper=exp.paper,
    seed=seed,
    temperature=temperature,
    run=workdir,
    init=config['model']['init'],
    augment=config['augment'],
    depth=config['model']['depth'] if config['model']['name'] == 'mlp' else None,  # hidden layers
    num_epochs=config['num_epochs'],
    num_train=train_results.get('num_train'),
    init_logits_norm=_init_logits_norm(workdir, train_results),
    train_seconds=train_results.get('train_seconds'),
    analysis_seconds=finished.analysis['timings_s']['total'],
  )
  return rec


def _points(spec, seeds, only, temperatures):
  """(experiment, T, seed) in the order runs are made: seed-major, so that an interrupted
  preset has one seed of every setting before it starts the second."""
  for seed in range(seeds):
    for exp in spec['experiments']:
      if only and exp.name not in only:
        continue
      for temperature in temperatures or exp.temperatures:
        yield exp, temperature, seed


def _checked_points(spec, seeds, only, temperatures, data_dir) -> list[tuple]:
  """`_points`, each config built first: a bad override stops the preset before it trains."""
  points = list(_points(spec, seeds, only, temperatures))
  for exp, temperature, seed in points:
    make_config(exp, temperature, seed, data_dir)
  return points


def merge_records(recorded: dict, made: dict, spec) -> list[dict]:
  """Every record of the preset's experiments: those already in runs.jsonl, updated by this
  call's `made` ones, in point order (seed, experiment, T). A call restricted by --only,
  --temperatures or --seeds must not drop the other points from runs.jsonl or the table."""
  order = {exp.name: i for i, exp in enumerate(spec['experiments'])}
  merged = {key: rec for key, rec in recorded.items() if key[0] in order}
  merged.update(made)
  return [merged[key] for key in sorted(merged, key=lambda k: (k[2], order[k[0]], k[1]))]


def reproduce(
  preset: str,
  *,
  seeds: int | None = None,
  outdir: str | None = None,
  data_dir: str | None = None,
  only: list[str] | None = None,
  temperatures: list[float] | None = None,
  force: bool = False,
  analysis_overrides: dict | None = None,
  stage: str = 'all',
) -> list[dict]:
  """Runs a preset end to end; returns the aggregated rows (also written to outdir).

  The tables aggregate every point of the preset recorded in `runs.jsonl`, not only those
  this call selects (`only`, `temperatures`, `seeds`).

  Finished runs are not retrained and analysed runs are not re-analysed (unless `force`),
  so calling it again continues an interrupted preset; points already in `runs.jsonl`
  (committed by an earlier session, whose run directories are gone) are reused as they are.
  `stage` = 'train' | 'analyze' | 'all' (see `run_one`). `analysis_overrides`: flat
  `AnalysisConfig` overrides for every run; an unknown key in them or in a point's config
  overrides raises ValueError here, before anything trains.
  """
  AnalysisConfig.from_overrides(analysis_overrides)
  spec = PRESETS[preset]
  seeds = int(seeds or spec['seeds'])
  points = _checked_points(spec, seeds, only, temperatures, data_dir)
  outdir = outdir or os.path.join('experiments', 'results', f'table1_{preset}')
  os.makedirs(outdir, exist_ok=True)
  made, recorded = {}, records.read_runs(outdir)
  for exp, temperature, seed in points:
    logging.info('=== %s T=%g seed=%d ===', exp.name, temperature, seed)
    key = (exp.name, float(temperature), int(seed))
    if key in recorded and not force:
      continue  # in runs.jsonl already: nothing to run or rewrite
    rec = run_one(
      exp,
      temperature,
      seed,
      outdir=outdir,
      data_dir=data_dir,
      force=force,
      analysis_overrides=analysis_overrides,
      stage=stage,
    )
    if rec is None:
      continue
    made[key] = rec
    # Re-read: another call on the same outdir (e.g. one per temperature, run side by side)
    # may have recorded points since this one started.
    merged = merge_records(records.read_runs(outdir), made, spec)
    if not distributed.is_main_process():
      continue  # process 0 writes the tables
    _write_outputs(merged, outdir, preset)  # partial tables while it runs
  merged = merge_records(records.read_runs(outdir), made, spec)
  if merged and distributed.is_main_process():
    return _write_outputs(merged, outdir, preset)  # point order, no retired experiments
  return aggregate(merged)


def _write_outputs(records: list[dict], outdir: str, preset: str) -> list[dict]:
  """Writes runs.jsonl, table1.md/.csv and probe_profiles.png (once a run has probes);
  returns the aggregated rows."""
  write_runs(records, outdir)
  rows = aggregate(records)
  write_tables(rows, outdir, preset)
  if any(rec.get('id_probe_accuracy') for rec in records):
    table1_plot.plot_probe_profiles(records, os.path.join(outdir, 'probe_profiles.png'))
  return rows


def _define_flags():
  flags.DEFINE_enum('preset', 'cpu', list(PRESETS), 'Which reproduction to run.')
  flags.DEFINE_integer('seeds', None, "Seeds per setting (default: the preset's).")
  flags.DEFINE_string(
    'outdir', None, 'Output folder (default experiments/results/table1_<preset>).'
  )
  flags.DEFINE_string('data_dir', None, "tfds data_dir (default: each config's).")
  flags.DEFINE_list('only', None, 'Run only these experiments (names in the preset).')
  flags.DEFINE_list('temperatures', None, 'Override the temperatures.')
  flags.DEFINE_bool('force', False, 'Retrain and re-analyse existing runs.')
  flags.DEFINE_integer(
    'probe_epochs', None, "Override the probes' epochs (default: each experiment's analysis)."
  )
  flags.DEFINE_enum(
    'stage',
    'all',
    ['all', 'train', 'analyze'],
    'train: only train; analyze: only analyse runs that finished training.',
  )
  distributed.define_flags()


def main(argv):
  del argv
  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  fl = flags.FLAGS
  distributed.initialize_from_flags()
  overrides = {}
  if fl.probe_epochs is not None:
    overrides['probe_epochs'] = fl.probe_epochs
  rows = reproduce(
    fl.preset,
    seeds=fl.seeds,
    outdir=fl.outdir,
    data_dir=fl.data_dir,
    only=fl.only,
    temperatures=[float(t) for t in fl.temperatures] if fl.temperatures else None,
    force=fl.force,
    analysis_overrides=overrides,
    stage=fl.stage,
  )
  if distributed.is_main_process():
    print(to_markdown(rows, fl.preset))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
