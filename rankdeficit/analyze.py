"""Post-hoc analysis of a run directory: probes, kappa/rho, ranks, collapse and OOD detection.

    python -m rankdeficit.analyze --workdir=runs/x [--ood_dataset=mnist] [--max_examples=N]
        [--probe_epochs=50] [--data_dir=...] [--step=...]

The options are the fields of `rankdeficit.analysis.config.AnalysisConfig` (one flag each;
`--probe_*` set its `probes.ProbeConfig`); from Python,
`analyze_run(workdir, AnalysisConfig.from_overrides({'max_examples': 400}))`.

Loads the run (`loading.load_for_analysis`: its plan + latest checkpoint), streams every
layer's representation (a fixed random subset of <= `max_dims` = 10,000 coordinates per
layer, the same subset for every dataset) on four splits -- ID train/test
(`config.dataset`) and OOD train/test (`config.ood_dataset`, preprocessed exactly like the
ID data: same normalisation and `image_size`) -- and computes:

* per-layer linear probes (paper A.5; `rankdeficit.analysis.probes`, `.depth`) on every
  hidden post-activation layer and on the final layer before (`logits`) and after (`softmax`,
  at the run's final T) the softmax: ID probes trained on ID train, scored on ID test; OOD
  probes trained on OOD train, scored on OOD test; effective depth kappa (ID) and OOD
  generalization loss rho (OOD) under the conventions of `rankdeficit.analysis.probe_layers`
  (`kappa`/`rho` = the default, `paper`; `kappa_by_convention`/`rho_by_convention` = all
  three);
* solution rank SR = numerical rank of the pre-softmax logits over the whole ID test split,
  the post-softmax rank at the run's (final) temperature, and the logits norm (Frobenius and
  mean per-sample L2); the bound on SR from the penultimate width (paper: "bounded by the
  size of the classifier");
* per-layer representation rank (ID test, the coordinate subset), and effective rank, for
  every probed layer (`logits` and `softmax` included);
* Neural Collapse NC1-NC4 on ID *train* penultimate features (Papyan et al. use the training
  set), OrthoDev (Eq. 4) between ID test class means and the OOD test global mean, also per
  layer (Figure 22);
* NECO OOD detection: PCA fitted on ID train penultimate features, ID test vs OOD test:
  AUROC, AUPR-In/Out, FPR@95 in the NECO convention (ID positive) and the OpenOOD one;
* wall-clock timings of every stage.

Outputs in `workdir/analysis/`: `analysis.json`, `analysis.md` (Markdown tables),
`probe_accuracy.png` (Figure 1 style: ID and OOD probe accuracy per layer) and
`representation_rank.png`.

`--max_examples=N` caps EVERY split at a fixed random subset of N examples (for speed; the SR
is then over N test examples, recorded as `num_examples`).

Memory: the features never leave the devices. Each process extracts its block of every
split data-parallel over the mesh's `data` axis and keeps each layer's rows where they were
computed (`analysis.rows`: global arrays sharded by rows; a process holds 1/processes of
them); probes train data-parallel on them (`analysis.sharded_probes`), ranks come from a
TSQR over the devices (`metrics.tsqr`), NC / OrthoDev / NECO from sums over rows
(`metrics.streamed`), and only NECO's per-row scores are gathered. `analysis.memory_plan`
splits the layers into consecutive groups whose features fit each device's budget
(`--device_memory_fraction` of an accelerator's memory; on CPU `--max_feature_gib`, default
6 GiB per process), one extraction pass per group; the plan is logged and recorded as
`layer_groups` and does not change the numbers.

    python -m rankdeficit.analyze --plan_only --plan_config=resnet50_in1k \
        --plan_processes=8 --plan_devices_per_process=4 --plan_hbm_gib=16 \
        --max_train_examples=100000

prints the memory plan of a config on a pod shape (per-process host and device bytes of the
features, probes and TSQR / Gram factors; `analysis.memory_model`) without data or
checkpoints.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from absl import app
from absl import flags
import jax

from rankdeficit.analysis import config as analysis_config
from rankdeficit.analysis import extraction
from rankdeficit.analysis import header
from rankdeficit.analysis import loading
from rankdeficit.analysis import measurements
from rankdeficit.analysis import memory_plan
from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import report
from rankdeficit.analysis import rows
from rankdeficit.analysis import timing
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.analysis.feature_metrics import attention_metrics
from rankdeficit.analysis.loading import check_analyzable
from rankdeficit.analysis.loading import warn_if_training
from rankdeficit.analysis.report import to_markdown
from rankdeficit.analysis.report import write_plots
from rankdeficit.run import distributed
from rankdeficit.run import run_dir
from rankdeficit.run import runtime

ANALYSIS_DIR = run_dir.ANALYSIS_DIR

__all__ = [
  'ANALYSIS_DIR',
  'AnalysisConfig',
  'analyze_run',
  'attention_metrics',
  'check_analyzable',
  'to_markdown',
  'warn_if_training',
  'write_plots',
]


def analyze_run(workdir: str, config: AnalysisConfig = AnalysisConfig()) -> dict[str, Any]:
  """Analyses the run in `workdir` and (if `config.write`) writes `workdir/analysis/`.

  The steps, in order (`rankdeficit.analysis` modules): `loading.load_for_analysis`,
  `memory_plan.memory_plan` (layer groups), then per group `extraction.extract_splits`
  (features sharded by rows over every device) -> `feature_metrics.representation_ranks`
  -> `feature_metrics.probe_accuracies` -> `feature_metrics.orthodev_per_layer`
  (`measurements.grouped_layer_metrics`); on the group holding the penultimate layer
  `feature_metrics.logit_metrics`, `.neural_collapse_metrics` and `.ood_detection`
  (`measurements.final_metrics`); `feature_metrics.depth_metrics` (kappa / rho over every
  layer); `feature_metrics.attention_metrics` (ViTs); then `report.write_analysis`. The
  numbers do not depend on the grouping, nor (up to float32 summation order) on the number
  of processes and devices.

  Args:
    workdir: run directory (config.json + checkpoints/).
    config: the analysis options (`rankdeficit.analysis.config.AnalysisConfig`: data
      subsets, probe settings, coordinates per layer, seed, outputs, memory); the defaults
      are the paper's protocol. E.g. `AnalysisConfig.from_overrides({'max_examples': 400,
      'probe_epochs': 3})`.
  Returns:
    The analysis as a JSON-serialisable dict (also written to analysis.json).
  """
  check_analyzable(workdir)
  warn_if_training(workdir)  # a live lock holder: the latest checkpoint, not the final one
  timer, t_start = timing.Timer(), time.perf_counter()
  run = loading.load_for_analysis(workdir, config, timer)
  coord_key, probe_key = jax.random.split(jax.random.PRNGKey(config.seed))
  coords = extraction.layer_coordinates(
    run.model, run.variables, run.image_shape, max_dims=config.max_dims, key=coord_key
  )
  groups = memory_plan.memory_plan(
    run.config,
    coords,
    max_examples=config.max_examples,
    max_train_examples=config.max_train_examples,
    batch_size=int(config.batch_size or run.config.eval_batch_size),
    max_feature_gib=config.max_feature_gib,
    device_memory_fraction=config.device_memory_fraction,
  )
  with rows.cpu_blas_threads():
    per_layer, splits = measurements.grouped_layer_metrics(
      run,
      config,
      coords,
      groups,
      coord_key=coord_key,
      probe_key=probe_key,
      timer=timer,
      mesh=rows.analysis_mesh(),
    )
    out = _results(workdir, run, config, coords, groups, per_layer, splits, timer=timer)
  out['timings_s'] = dict(timer.timings, total=round(time.perf_counter() - t_start, 3))
  if config.write and distributed.is_main_process():  # every process holds the same results
    report.write_analysis(out, workdir, plots=config.plots, timer=timer)
  return out


def _results(workdir, run, config, coords, groups, per_layer, splits, *, timer) -> dict[str, Any]:
  """analysis.json's content but the timings: the header, the final-layer metrics (from the
  last group's `splits`), the per-layer ones and, for ViTs, the attention metrics."""
  hidden = list(coords)
  full_dims = extraction.full_dims(run.model, run.variables, run.image_shape, hidden)
  full_dims.update({l: run.num_classes for l in probe_layers.FINAL_LAYERS})
  final_coords = {l: splits['id_test'].coords[l] for l in probe_layers.FINAL_LAYERS}
  out = header.run_header(
    workdir,
    run,
    splits,
    full_dims,
    hidden,
    coords={**coords, **final_coords},
    analysis=config,
    groups=groups,
  )
  out.update(
    measurements.final_metrics(
      run, splits, hidden, full_dims=full_dims, neco_dim=config.neco_dim, timer=timer
    )
  )
  out.update(measurements.per_layer_results(per_layer, hidden))
  if run.config.model.name.startswith('vit'):
    with timer('attention'):
      out['attention'] = attention_metrics(run.config, run.model, run.variables)
  return out


def _define_flags():
  """CLI flags, defined only when run as a script (so importing this module is side-effect
  free): --workdir, one flag per `AnalysisConfig` option, the memory-plan flags and the
  distributed flags."""
  flags.DEFINE_string('workdir', None, 'Run directory to analyse.')
  flags.DEFINE_bool(
    'plan_only',
    False,
    'Print the memory plan of --plan_config (per-process host and device bytes of the '
    'features, probes and TSQR / Gram factors) for --plan_processes x '
    '--plan_devices_per_process devices of --plan_hbm_gib each, and exit: no data, no '
    'checkpoint.',
  )
  flags.DEFINE_string('plan_config', None, "Config of --plan_only, e.g. 'resnet50_in1k'.")
  flags.DEFINE_integer('plan_processes', 1, 'Processes (hosts) of --plan_only.')
  flags.DEFINE_integer('plan_devices_per_process', 1, 'Devices per process of --plan_only.')
  flags.DEFINE_float('plan_hbm_gib', 16.0, 'Memory per device (GiB) of --plan_only.')
  analysis_config.define_flags()
  flags.adopt_module_key_flags(analysis_config)  # listed by --help
  distributed.define_flags()


def _print_plan(FLAGS) -> None:  # pylint: disable=invalid-name
  """--plan_only: the memory model's table (`analysis.memory_model`)."""
  from rankdeficit.analysis import memory_model  # pylint: disable=import-outside-toplevel

  if not FLAGS.plan_config:
    raise app.UsageError('--plan_only needs --plan_config (e.g. resnet50_in1k)')
  shape = memory_model.PodShape(
    FLAGS.plan_processes, FLAGS.plan_devices_per_process, FLAGS.plan_hbm_gib
  )
  config = memory_model.load_config(FLAGS.plan_config)
  print(memory_model.format_table(config, analysis_config.from_flags(), shape))


def main(argv):
  del argv
  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.plan_only:
    _print_plan(FLAGS)
    return
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required')
  distributed.initialize_from_flags()
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  try:
    a = analyze_run(FLAGS.workdir, analysis_config.from_flags())
  except (ValueError, input_pipeline.DatasetNotFoundError) as e:
    sys.exit(f'error: {e}')
  if distributed.is_main_process():
    print(to_markdown(a))
    print(f'Wrote {run_dir.RunDir(FLAGS.workdir).analysis}/')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
