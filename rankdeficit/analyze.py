"""Post-hoc analysis of a run directory: probes, kappa/rho, ranks, collapse and OOD detection.

    python -m rankdeficit.analyze --workdir=runs/x [--ood_dataset=mnist] [--max_examples=N]
        [--probe_epochs=50] [--data_dir=...] [--step=...]

The options are the fields of `rankdeficit.analysis.config.AnalysisConfig` (one flag each;
`--probe_*` set its `probes.ProbeConfig`); from Python,
`analyze_run(workdir, AnalysisConfig.from_overrides({'max_examples': 400}))`.

Loads the run (`checkpointing.load_run`: resolved config + latest checkpoint), streams every
layer's representation (a fixed random subset of <= `max_dims` = 10,000 coordinates per
layer, the same subset for every dataset) on four splits -- ID train/test
(`config.dataset`) and OOD train/test (`config.ood_dataset`, preprocessed exactly like the
ID data: same normalisation and `image_size`) -- and computes:

* per-layer linear probes (paper A.5; `rankdeficit.analysis.probes`) on every hidden post-activation
  layer and on the final layer before (`logits`) and after (`softmax`, at the run's final T)
  the softmax: ID probes trained on ID train, scored on ID test; OOD probes trained on OOD
  train, scored on OOD test; effective depth kappa (ID) and OOD generalization loss rho
  (OOD) under the conventions of `rankdeficit.analysis.probe_layers` (`kappa`/`rho` = the default,
  `paper`; `kappa_by_convention`/`rho_by_convention` = all three);
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

`--max_examples=N` caps EVERY split at a fixed random subset of N examples (for speed; the
SR is then over N test examples, recorded as `num_examples`). Memory: the kept features live
on the host (examples x layers x <= 10,000 float32). `memory_plan` splits the layers into
consecutive groups whose features over every split fit `--max_feature_gib` (default 6 GiB),
extracting the splits once per group (a ResNet-20 on all 50,000 CIFAR-10 images with OOD
MNIST holds 37 GiB of features over its 11 hidden layers: 8 passes of <= 6 GiB). The
grouping is recorded as `layer_groups` and does not change the numbers. Cap with
max_examples on ImageNet-scale training sets.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit import metrics
from rankdeficit import models
from rankdeficit.analysis import config as analysis_config
from rankdeficit.analysis import extraction
from rankdeficit.analysis import probe_layers
from rankdeficit.analysis import probes
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.analysis.report import to_markdown  # noqa: F401 (public)
from rankdeficit.analysis.report import write_plots  # noqa: F401 (public)
from rankdeficit.run import distributed
from rankdeficit.run import run_dir
from rankdeficit.run import storage

ANALYSIS_DIR = 'analysis'


class _Timer:
  def __init__(self):
    self.timings: dict[str, float] = {}

  def __call__(self, name: str):
    timer = self

    class _Ctx:
      def __enter__(self):
        self.t0 = time.perf_counter()

      def __exit__(self, *exc):
        timer.timings[name] = round(timer.timings.get(name, 0.0) + time.perf_counter() - self.t0, 3)

    return _Ctx()


def _run_temperature(config) -> float:
  """The temperature at the end of training (the final one of a schedule)."""
  if (
    config.get('temperature_schedule', 'constant') != 'constant'
    and config.get('final_temperature') is not None
  ):
    return float(config.final_temperature)
  return float(config.temperature)


def _head(variables) -> tuple[np.ndarray, np.ndarray] | None:
  head = variables.get('params', {}).get('head')
  if head is None:
    return None
  return np.asarray(head['kernel'], np.float32), np.asarray(head.get('bias', 0.0), np.float32)


def _f(x) -> float:
  return float(np.asarray(x))


def logit_metrics(
  id_test: probes.Features,
  *,
  temperature: float,
  num_classes: int,
  penultimate_width: int,
  has_bias: bool,
) -> dict[str, Any]:
  """Step 2a: test accuracy, SR, post-softmax rank, logits norm and the bound on SR."""
  logits = jnp.asarray(id_test.logits)
  n = len(id_test.labels)
  return {
    'test_accuracy': float(np.mean(np.argmax(id_test.logits, -1) == id_test.labels)),
    'solution_rank': int(metrics.numerical_rank(logits)),
    'post_softmax_rank': int(metrics.softmax_rank(logits, temperature)),
    'post_softmax_rank_T1': int(metrics.softmax_rank(logits, 1.0)),
    'logits_norm_frobenius': _f(metrics.logits_norm(logits)),
    'logits_norm_mean': _f(metrics.mean_per_sample_norm(logits)),
    'penultimate_width': penultimate_width,
    # rank(H W + 1 b^T) <= width (+1 with a bias); also <= classes and <= examples.
    'solution_rank_bound': int(min(penultimate_width + int(has_bias), num_classes, n)),
    'solution_rank_bounded_by_classifier': bool(penultimate_width + int(has_bias) < num_classes),
  }


def representation_ranks(id_test: probes.Features) -> dict[str, dict[str, float]]:
  """Step 2b: numerical and effective rank of every probed layer on ID test."""
  reps = id_test.reps
  return {
    'representation_rank': {
      l: int(metrics.numerical_rank(jnp.asarray(x))) for l, x in reps.items()
    },
    'representation_effective_rank': {
      l: _f(metrics.effective_rank(jnp.asarray(x))) for l, x in reps.items()
    },
  }


def probe_accuracies(
  splits: dict[str, probes.Features],
  *,
  num_classes: int,
  ood_num_classes: int | None,
  key,
  config: probes.ProbeConfig,
  timer,
) -> dict[str, dict[str, float]]:
  """Step 3a: ID (and OOD) probe accuracy of every layer the splits hold, forward order."""

  def fit(train, test, classes, fold):
    return probes.fit_layer_probes(
      train.reps,
      train.labels,
      test.reps,
      test.labels,
      classes,
      key=jax.random.fold_in(key, fold),
      config=config,
    )

  with timer('id_probes'):
    out = {'id_probe_accuracy': fit(splits['id_train'], splits['id_test'], num_classes, 0)}
  if 'ood_train' in splits:
    with timer('ood_probes'):
      out['ood_probe_accuracy'] = fit(splits['ood_train'], splits['ood_test'], ood_num_classes, 1)
  return out


def depth_metrics(
  id_accuracy: dict[str, float], ood_accuracy: dict[str, float] | None, hidden: list[str]
) -> dict[str, Any]:
  """Step 3b: kappa / rho under every convention of `rankdeficit.analysis.probe_layers`."""
  out: dict[str, Any] = {
    'probe_convention': probe_layers.DEFAULT_CONVENTION,
    'id_probe_accuracy': id_accuracy,
  }
  out['kappa_by_convention'] = probe_layers.kappa_by_convention(id_accuracy, hidden)
  out['kappa'] = out['kappa_by_convention'][probe_layers.DEFAULT_CONVENTION]
  out['rho'] = out['rho_by_convention'] = None
  if ood_accuracy is not None:
    out['ood_probe_accuracy'] = ood_accuracy
    out['rho_by_convention'] = probe_layers.rho_by_convention(ood_accuracy, hidden)
    out['rho'] = out['rho_by_convention'][probe_layers.DEFAULT_CONVENTION]
    out['ood_best_layer'] = max(ood_accuracy, key=ood_accuracy.get)
  return out


def neural_collapse_metrics(
  id_train: probes.Features, penult: str, *, num_classes: int, head, full_width: int
) -> dict[str, Any]:
  """Step 4a: Neural Collapse NC1-NC4 on ID train penultimate features."""
  coords = id_train.coords[penult]
  present = int(len(np.unique(id_train.labels)))
  if present < num_classes:  # NC is defined over every class (metrics raise otherwise)
    nc = {'skipped': f'only {present}/{num_classes} classes present in id_train'}
  else:
    classifier = None if head is None else jnp.asarray(head[0][coords].T)  # [C, coords]
    nc = metrics.neural_collapse_from_features(
      jnp.asarray(id_train.reps[penult]),
      jnp.asarray(id_train.labels),
      num_classes,
      logits=jnp.asarray(id_train.logits),
      classifier=classifier,
    )
    nc = {k: _f(v) for k, v in nc.items()}
  nc['split'] = 'id_train'
  if len(coords) < full_width:
    nc['note'] = f'on a random subset of {len(coords)} of {full_width} coordinates'
  return nc


def orthodev_per_layer(
  id_test: probes.Features, ood_test: probes.Features, layers: list[str], *, num_classes: int
) -> dict[str, float]:
  """Step 4b: OrthoDev (ID test class means vs the OOD test global mean) per layer."""
  out = {}
  for l in layers:
    stats = metrics.class_stats_from_features(
      jnp.asarray(id_test.reps[l]), jnp.asarray(id_test.labels), num_classes
    )
    out[l] = _f(metrics.orthodev(stats.means, jnp.mean(jnp.asarray(ood_test.reps[l]), axis=0)))
  return out


def ood_detection(
  splits: dict[str, probes.Features],
  penult: str,
  *,
  num_classes: int,
  neco_dim: int | None,
  detection_dataset: str,
) -> dict[str, Any]:
  """Step 5: NECO (PCA fitted on ID train penultimate features), ID test vs detection set."""
  id_train = splits['id_train'].reps[penult]
  dim = int(min(neco_dim or num_classes, id_train.shape[1]))
  params = metrics.neco_fit(jnp.asarray(id_train), dim)
  s_id = metrics.neco_score(params, jnp.asarray(splits['id_test'].reps[penult]))
  s_ood = metrics.neco_score(params, jnp.asarray(splits['det_test'].reps[penult]))
  det = {k: _f(v) for k, v in metrics.ood_metrics(s_id, s_ood, fpr_convention='neco').items()}
  det['fpr95_openood'] = _f(metrics.fpr_at_95_tpr(s_id, s_ood, convention='openood'))
  det.update(
    method='neco',
    neco_dim=dim,
    ood_dataset=detection_dataset,
    id_split='test',
    ood_split='test',
    fit_split='id_train',
    fpr95_neco_convention='ID positive: fraction of OOD accepted when 95% of ID '
    'is kept (ViM/NECO code, paper Table 2)',
    fpr95_openood_convention='OOD positive (OpenOOD)',
  )
  return det


def attention_metrics(
  config, model, variables, *, num_examples: int = 256
) -> dict[str, dict[str, Any]]:
  """Step 5b (ViTs): per attention layer, rank / effective rank / entropy / logits norm of
  the attention maps on the first `num_examples` ID test images (`metrics.attention`):
  the mean over heads, and the per-head values."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from rankdeficit.metrics import attention  # pylint: disable=import-outside-toplevel
  from rankdeficit.models import vit  # pylint: disable=import-outside-toplevel

  batch = next(
    iter(
      input_pipeline.create_eval_iterator(
        config, config.dataset, 'test', batch_size=num_examples, num_examples=num_examples
      )
    )
  )
  images = jnp.asarray(batch['image'][np.asarray(batch['mask'], bool)])
  logits = jax.jit(lambda v, x: vit.attention_logits(model, v, x))(variables, images)
  out = {}
  for layer, z in logits.items():
    stats = jax.device_get(attention.attention_statistics(z))
    out[layer] = {k: float(np.mean(v)) for k, v in stats.items()}
    out[layer]['per_head'] = {k: [float(x) for x in v] for k, v in stats.items()}
  return out


def write_analysis(out: dict[str, Any], workdir: str, *, plots: bool, timer) -> None:
  """Step 6: analysis.json, analysis.md and (optionally) the PNG plots in workdir/analysis."""
  outdir = storage.workdir_path(workdir) / ANALYSIS_DIR
  outdir.mkdir(parents=True, exist_ok=True)
  if plots:
    with timer('plots'):
      write_plots(out, outdir)
    out['timings_s']['plots'] = timer.timings['plots']
  storage.write_json(outdir / 'analysis.json', out, indent=2)
  (outdir / 'analysis.md').write_text(to_markdown(out))


def check_analyzable(workdir: str) -> None:
  """Raises ValueError (one line naming the file, field and fix) unless `workdir` holds a
  readable config (config.json, else the copy stored in its checkpoints) with a valid
  temperature and at least one checkpoint. Reads only."""
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import config_diff

  path = storage.workdir_path(workdir)
  config_path = path / run_dir.CONFIG_FILE
  stored = None if config_path.exists() else checkpointing.stored_config(path)
  if not config_path.exists() and stored is None:
    raise ValueError(
      f'{config_path} does not exist: --workdir must be a run directory '
      f'written by python -m rankdeficit.main.'
    )
  try:
    saved = storage.read_json(config_path) if stored is None else stored
  except ValueError as e:
    raise ValueError(
      f'{config_path} is not valid JSON ({str(e).splitlines()[0]}); restore '
      f'it from the run that wrote the checkpoints.'
    ) from e
  for field in ('temperature', 'final_temperature'):
    value = saved.get(field) if isinstance(saved, dict) else None
    if field == 'temperature' or value is not None:
      if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(
          f'{config_path}: {field}={value!r} is invalid (a finite number > 0 '
          f'is needed to compute the post-softmax layer); fix config.json.'
        )
  if not config_diff.has_checkpoint(path):
    raise ValueError(
      f'No checkpoint in {path / "checkpoints"}: train the run first '
      f'(python -m rankdeficit.main ... --workdir={workdir}).'
    )


def warn_if_training(workdir: str) -> str | None:
  """Logs and returns a warning when a live process holds `workdir`'s lock (see
  rankdeficit/run/workdir_lock.py): the run is still training, so its latest checkpoint, not
  its final weights, is what gets analysed. None otherwise."""
  from rankdeficit.run import workdir_lock  # pylint: disable=import-outside-toplevel

  holder = workdir_lock.live_holder(storage.workdir_path(workdir))
  if holder is None:
    return None
  message = (
    f'{workdir} is still training (locked by {workdir_lock.describe(holder)}): '
    f'this analyses its latest checkpoint, not its final weights; analyse it '
    f'again when the run has finished.'
  )
  logging.warning('%s', message)
  return message


def _run_header(
  workdir, run: _Run, splits, full_dims, hidden, *, coords, analysis: AnalysisConfig, groups
) -> dict[str, Any]:
  """What was analysed and how: the run, its layers and widths, split sizes, probe settings."""
  layers, probe = list(coords), analysis.probe
  return {
    'workdir': os.fspath(storage.workdir_path(workdir)),
    'step': int(run.step),
    'model': run.config.model.name,
    'dataset': run.config.dataset,
    'ood_dataset': run.config.ood_dataset or '',
    'temperature': run.temperature,
    'num_classes': run.num_classes,
    'seed': analysis.seed,
    'layers': layers,
    'hidden_layers': hidden,
    'feature_dims': {l: [int(len(coords[l])), full_dims[l]] for l in layers},
    'num_examples': {k: int(len(v.labels)) for k, v in splits.items() if k != 'det_test'},
    'layer_groups': groups,
    'probe_config': {
      **(
        {'optimizer': 'adamw', 'weight_decay_mode': 'decoupled'}
        if probe.decoupled_weight_decay
        else {'optimizer': 'adam (torch.optim.Adam semantics)', 'weight_decay_mode': 'coupled L2'}
      ),
      'learning_rate': probe.learning_rate,
      'weight_decay': probe.weight_decay,
      'epochs': probe.num_epochs,
      'batch_size': probe.batch_size,
      'standardize': probe.standardize,
      'max_dims': analysis.max_dims,
    },
    'probe_conventions': probe_layers.DESCRIPTIONS,
  }


def memory_plan(
  config,
  coords: dict[str, np.ndarray],
  *,
  max_examples: int | None,
  max_train_examples: int | None,
  max_feature_gib: float,
) -> list[list[str]]:
  """Layer groups whose features (every split, float32) fit `max_feature_gib` of host memory.

  Each group is one extraction pass over every split; only one group's features are held
  at a time (0 = one group: every layer at once). The plan is logged.
  """
  rows = extraction.split_rows(
    config, max_examples=max_examples, max_train_examples=max_train_examples
  )
  widths = {l: len(c) for l, c in coords.items()}
  groups = extraction.plan_layer_groups(widths, sum(rows.values()), int(max_feature_gib * 2**30))
  total = 4 * sum(rows.values()) * sum(widths.values())
  logging.info(
    'Analysis memory plan: %s rows (%s) x %d coordinates = %.2f GiB of features '
    'in %d extraction pass(es), at most %.2f GiB at a time: %s',
    sum(rows.values()),
    rows,
    sum(widths.values()),
    total / 2**30,
    len(groups),
    max(4 * sum(rows.values()) * sum(widths[l] for l in g) for g in groups) / 2**30,
    groups,
  )
  return groups


def _without_final_layers(splits: dict[str, probes.Features]) -> dict[str, probes.Features]:
  return {
    k: v._replace(reps={l: x for l, x in v.reps.items() if l not in probe_layers.FINAL_LAYERS})
    for k, v in splits.items()
  }


def _layer_metrics(
  splits, layers, *, num_classes, ood_classes, key, probe_config, layer_ranks, timer
) -> dict[str, dict[str, float]]:
  """Per-layer results of one layer group: ranks, probe accuracies, OrthoDev."""
  out = {}
  if layer_ranks:
    with timer('representation_ranks'):
      out.update(representation_ranks(splits['id_test']))
  out.update(
    probe_accuracies(
      splits,
      num_classes=num_classes,
      ood_num_classes=ood_classes,
      key=key,
      config=probe_config,
      timer=timer,
    )
  )
  if 'ood_test' in splits:
    with timer('collapse'):
      out['orthodev_per_layer'] = orthodev_per_layer(
        splits['id_test'], splits['ood_test'], layers, num_classes=num_classes
      )
  return out


def _final_metrics(
  config, splits, hidden, *, num_classes, temperature, head, full_dims, neco_dim, timer
) -> dict[str, Any]:
  """Logits (SR, norms), Neural Collapse and NECO: from the group holding the penultimate
  layer and the final layers."""
  penult = hidden[-1]
  with timer('logits_metrics'):
    out = logit_metrics(
      splits['id_test'],
      temperature=temperature,
      num_classes=num_classes,
      penultimate_width=full_dims[penult],
      has_bias=head is not None,
    )
  with timer('collapse'):
    out['neural_collapse'] = neural_collapse_metrics(
      splits['id_train'], penult, num_classes=num_classes, head=head, full_width=full_dims[penult]
    )
  if 'det_test' in splits:
    with timer('neco'):
      out['ood_detection'] = ood_detection(
        splits,
        penult,
        num_classes=num_classes,
        neco_dim=neco_dim,
        detection_dataset=config.ood_detection_dataset or config.ood_dataset,
      )
  return out


class _Run(NamedTuple):
  """A run as the analysis reads it (`_load_run`)."""

  config: Any  # resolved config, with the analysis's data_dir / ood_dataset
  model: Any  # the float32 measurement model
  variables: Any
  step: int
  num_classes: int
  ood_classes: int | None
  temperature: float  # the final one
  head: tuple[np.ndarray, np.ndarray] | None


def _load_run(workdir: str, analysis: AnalysisConfig, timer) -> _Run:
  """The checkpoint at `analysis.step` (default: latest) and what the metrics need of it."""
  from rankdeficit.data import input_pipeline
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel

  with timer('load_run'):
    config, model, variables, step = checkpointing.load_run(workdir, analysis.step)
  model = models.measurement_model(model)  # float32 features even from a bf16-trained run
  with config.unlocked():
    config.data_dir = config.data_dir if analysis.data_dir is None else analysis.data_dir
    config.ood_dataset = (
      config.ood_dataset if analysis.ood_dataset is None else analysis.ood_dataset
    )
  info = lambda name: input_pipeline.dataset_info(name, config.data_dir)  # noqa: E731
  return _Run(
    config,
    model,
    variables,
    step,
    num_classes=int(config.model.num_classes or info(config.dataset).num_classes),
    ood_classes=info(config.ood_dataset).num_classes if config.ood_dataset else None,
    temperature=_run_temperature(config),
    head=_head(variables),
  )


def _grouped_layer_metrics(
  run: _Run, analysis: AnalysisConfig, coords, groups, *, coord_key, probe_key, timer
):
  """Per-layer metrics, one extraction pass per layer group; returns them and the last
  group's splits (which hold the penultimate layer and the final layers)."""
  per_layer: dict[str, dict[str, float]] = {}
  for i, group in enumerate(groups):
    splits = extraction.extract_splits(
      run.config,
      run.model,
      run.variables,
      temperature=run.temperature,
      batch_size=int(analysis.batch_size or run.config.eval_batch_size),
      max_examples=analysis.max_examples,
      max_train_examples=analysis.max_train_examples,
      key=coord_key,
      max_dims=analysis.max_dims,
      timer=timer,
      coords={l: coords[l] for l in group},
    )
    if i < len(groups) - 1:  # the final layers are measured once, with the last group
      splits = _without_final_layers(splits)
    for name, values in _layer_metrics(
      splits,
      group,
      num_classes=run.num_classes,
      ood_classes=run.ood_classes,
      key=probe_key,
      probe_config=analysis.probe,
      layer_ranks=analysis.layer_ranks,
      timer=timer,
    ).items():
      per_layer.setdefault(name, {}).update(values)
  return per_layer, splits


def analyze_run(workdir: str, config: AnalysisConfig = AnalysisConfig()) -> dict[str, Any]:
  """Analyses the run in `workdir` and (if `config.write`) writes `workdir/analysis/`.

  The steps, in order: `memory_plan` (layer groups), then per group
  `extraction.extract_splits` -> `representation_ranks` -> `probe_accuracies` ->
  `orthodev_per_layer`; then `depth_metrics` (kappa / rho over every layer), and on the
  group holding the penultimate layer `logit_metrics`, `neural_collapse_metrics` and
  `ood_detection`; then `write_analysis`. The numbers do not depend on the grouping.

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
  timer, t_start = _Timer(), time.perf_counter()
  run = _load_run(workdir, config, timer)
  coord_key, probe_key = jax.random.split(jax.random.PRNGKey(config.seed))
  coords = probes.layer_coordinates(
    run.model,
    run.variables,
    extraction.config_image_shape(run.config),
    max_dims=config.max_dims,
    key=coord_key,
  )
  hidden = list(coords)
  groups = memory_plan(
    run.config,
    coords,
    max_examples=config.max_examples,
    max_train_examples=config.max_train_examples,
    max_feature_gib=config.max_feature_gib,
  )
  per_layer, splits = _grouped_layer_metrics(
    run, config, coords, groups, coord_key=coord_key, probe_key=probe_key, timer=timer
  )
  full_dims = extraction.full_dims(run.config, run.model, run.variables, hidden)
  full_dims.update({l: run.num_classes for l in probe_layers.FINAL_LAYERS})
  out = _run_header(
    workdir,
    run,
    splits,
    full_dims,
    hidden,
    analysis=config,
    groups=groups,
    coords={**coords, **{l: splits['id_test'].coords[l] for l in probe_layers.FINAL_LAYERS}},
  )
  out.update(
    _final_metrics(
      run.config,
      splits,
      hidden,
      num_classes=run.num_classes,
      temperature=run.temperature,
      head=run.head,
      full_dims=full_dims,
      neco_dim=config.neco_dim,
      timer=timer,
    )
  )
  out.update(
    {
      k: per_layer[k]
      for k in ('representation_rank', 'representation_effective_rank')
      if k in per_layer
    }
  )
  out.update(
    depth_metrics(per_layer['id_probe_accuracy'], per_layer.get('ood_probe_accuracy'), hidden)
  )
  if 'orthodev_per_layer' in per_layer:
    out['orthodev'] = per_layer['orthodev_per_layer'][hidden[-1]]
    out['orthodev_per_layer'] = per_layer['orthodev_per_layer']
  if run.config.model.name.startswith('vit'):
    with timer('attention'):
      out['attention'] = attention_metrics(run.config, run.model, run.variables)
  out['timings_s'] = dict(timer.timings, total=round(time.perf_counter() - t_start, 3))
  if config.write and distributed.is_main_process():  # every process holds the same results
    write_analysis(out, workdir, plots=config.plots, timer=timer)
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
    print(f'Wrote {storage.workdir_path(FLAGS.workdir) / ANALYSIS_DIR}/')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
