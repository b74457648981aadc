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
is then over N test examples, recorded as `num_examples`). Memory: the kept features live on
the host (examples x layers x <= 10,000 float32). `analysis.memory_plan` splits the layers
into consecutive groups whose features over every split fit `--max_feature_gib` (default 6
GiB), extracting the splits once per group (a ResNet-20 on all 50,000 CIFAR-10 images with
OOD MNIST holds 37 GiB of features over its 11 hidden layers: 8 passes of <= 6 GiB). The
grouping is recorded as `layer_groups` and does not change the numbers. Cap with max_examples
on ImageNet-scale training sets.
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
from rankdeficit.analysis import timing
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.analysis.feature_metrics import attention_metrics
from rankdeficit.analysis.loading import check_analyzable
from rankdeficit.analysis.loading import warn_if_training
from rankdeficit.analysis.report import to_markdown
from rankdeficit.analysis.report import write_plots
from rankdeficit.run import distributed
from rankdeficit.run import run_dir

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
  `memory_plan.memory_plan` (layer groups), then per group `extraction.extract_splits` ->
  `ranks.representation_ranks` -> `depth.probe_accuracies` -> `collapse.orthodev_per_layer`
  (`measurements.grouped_layer_metrics`); on the group holding the penultimate layer
  `ranks.logit_metrics`, `collapse.neural_collapse_metrics` and `ood_detection.ood_detection`
  (`measurements.final_metrics`); `depth.depth_metrics` (kappa / rho over every layer);
  `attention.attention_metrics` (ViTs); then `report.write_analysis`. The numbers do not
  depend on the grouping.

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
    max_feature_gib=config.max_feature_gib,
  )
  per_layer, splits = measurements.grouped_layer_metrics(
    run, config, coords, groups, coord_key=coord_key, probe_key=probe_key, timer=timer
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
  free): --workdir, one flag per `AnalysisConfig` option, and the distributed flags."""
  flags.DEFINE_string('workdir', None, 'Run directory to analyse.')
  analysis_config.define_flags()
  flags.adopt_module_key_flags(analysis_config)  # listed by --help
  distributed.define_flags()


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
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
