"""Post-hoc analysis of a run directory: probes, kappa/rho, ranks, collapse and OOD detection.

    python -m rankdeficit.analyze --workdir=runs/x [--ood_dataset=mnist] [--max_examples=N]
        [--probe_epochs=50] [--data_dir=...] [--step=...]

Loads the run (`checkpointing.load_run`: resolved config + latest checkpoint), streams every
layer's representation (a fixed random subset of <= `max_dims` = 10,000 coordinates per
layer, the same subset for every dataset) on four splits -- ID train/test
(`config.dataset`) and OOD train/test (`config.ood_dataset`, preprocessed exactly like the
ID data: same normalisation and `image_size`) -- and computes:

* per-layer linear probes (paper A.5; `rankdeficit.probes`): ID probes trained on ID train,
  scored on ID test; OOD probes trained on OOD train, scored on OOD test;
  effective depth kappa (ID) and OOD generalization loss rho (OOD);
* solution rank SR = numerical rank of the pre-softmax logits over the whole ID test split,
  the post-softmax rank at the run's (final) temperature, and the logits norm (Frobenius and
  mean per-sample L2); the bound on SR from the penultimate width (paper: "bounded by the
  size of the classifier");
* per-layer representation rank (ID test, the coordinate subset), and effective rank;
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
SR is then over N test examples, recorded as `num_examples`). Memory: every split's kept
features live on the host (examples x layers x <= 10,000 float32); cap with max_examples on
ImageNet-scale training sets.
"""
from __future__ import annotations

import os
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit import distributed
from rankdeficit import metrics
from rankdeficit import probes
from rankdeficit import storage

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
  if config.get('temperature_schedule', 'constant') != 'constant' and config.get(
      'final_temperature') is not None:
    return float(config.final_temperature)
  return float(config.temperature)


def _head(variables) -> tuple[np.ndarray, np.ndarray] | None:
  head = variables.get('params', {}).get('head')
  if head is None:
    return None
  return np.asarray(head['kernel'], np.float32), np.asarray(head.get('bias', 0.0), np.float32)


def _f(x) -> float:
  return float(np.asarray(x))


def _extract(config, model, variables, dataset: str, split: str, *, batch_size: int,
             max_examples: int | None, coords, key, max_dims: int | None):
  from rankdeficit import input_pipeline  # pylint: disable=import-outside-toplevel
  batches = input_pipeline.create_eval_iterator(
      config, dataset, split, batch_size=batch_size, num_examples=max_examples,
      shuffle_seed=0 if max_examples else None)
  return _gather_processes(probes.extract_features(model, variables, batches,
                                                   max_dims=max_dims, key=key, coords=coords))


def _gather_processes(features: probes.Features) -> probes.Features:
  """The whole split on every process: each one extracted a contiguous block of it."""
  layers = list(features.reps)
  logits, labels, reps = distributed.allgather_rows(
      (features.logits, features.labels, [features.reps[l] for l in layers]))
  return features._replace(logits=logits, labels=labels, reps=dict(zip(layers, reps)))


def analyze_run(workdir: str, *, ood_dataset: str | None = None, data_dir: str | None = None,
                max_examples: int | None = None, max_train_examples: int | None = None,
                probe_epochs: int = 50,
                probe_batch_size: int = 4096, probe_lr: float = 1e-3,
                probe_weight_decay: float = 1e-3, standardize: bool = True,
                max_dims: int = 10_000, batch_size: int | None = None,
                neco_dim: int | None = None, step: int | None = None, seed: int = 0,
                layer_ranks: bool = True, plots: bool = True, write: bool = True
                ) -> dict[str, Any]:
  """Analyses the run in `workdir` and (if `write`) writes `workdir/analysis/`.

  Args:
    workdir: run directory (config.json + checkpoints/).
    ood_dataset: overrides `config.ood_dataset` ('' = skip every OOD metric).
    data_dir: overrides `config.data_dir`.
    max_examples: fixed random subset of at most this many examples per split.
    max_train_examples: overrides `max_examples` for the two train splits (the probes'
      training sets), e.g. to keep SR over the whole test split but subsample training.
    probe_*: probe hyperparameters (paper Table 5 by default); `standardize`: see probes.py.
    max_dims: feature coordinates kept per layer (paper: 10,000).
    batch_size: extraction batch (default `config.eval_batch_size`).
    neco_dim: NECO principal components (default: number of ID classes, <= feature width).
    step: checkpoint step (default: latest).
    seed: selects the coordinate subsets and the probes' shuffling.
    layer_ranks: compute per-layer representation ranks (an SVD per layer).
    plots: write the PNG figures.
  Returns:
    The analysis as a JSON-serialisable dict (also written to analysis.json).
  """
  from rankdeficit import checkpointing, input_pipeline  # pylint: disable=import-outside-toplevel
  timer = _Timer()
  t_start = time.perf_counter()
  with timer('load_run'):
    config, model, variables, ckpt_step = checkpointing.load_run(workdir, step)
  with config.unlocked():
    if data_dir is not None:
      config.data_dir = data_dir
    if ood_dataset is not None:
      config.ood_dataset = ood_dataset
  ood = config.ood_dataset or ''
  batch_size = int(batch_size or config.eval_batch_size)
  id_info = input_pipeline.dataset_info(config.dataset, config.data_dir)
  num_classes = int(config.model.num_classes or id_info.num_classes)
  temperature = _run_temperature(config)
  key = jax.random.PRNGKey(seed)
  coord_key, probe_key = jax.random.split(key)
  pcfg = probes.ProbeConfig(learning_rate=probe_lr, weight_decay=probe_weight_decay,
                            num_epochs=probe_epochs, batch_size=probe_batch_size,
                            standardize=standardize)
  ex = dict(config=config, model=model, variables=variables, batch_size=batch_size,
            key=coord_key, max_dims=max_dims)
  n_test = dict(max_examples=max_examples)
  n_train = dict(max_examples=max_train_examples or max_examples)

  with timer('extract_id_test'):
    id_test = _extract(dataset=config.dataset, split='test', coords=None, **n_test, **ex)
  coords = id_test.coords
  with timer('extract_id_train'):
    id_train = _extract(dataset=config.dataset, split='train', coords=coords, **n_train, **ex)
  layers = list(coords)
  penult = layers[-1]
  head = _head(variables)
  full_dims = {}
  rep_shapes = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                              jax.ShapeDtypeStruct((1, *config_image_shape(config)),
                                                   jnp.float32))[1]
  for l in layers:
    full_dims[l] = int(np.prod(rep_shapes[l].shape[1:]))

  out: dict[str, Any] = {
      'workdir': os.fspath(storage.workdir_path(workdir)), 'step': int(ckpt_step),
      'model': config.model.name, 'dataset': config.dataset, 'ood_dataset': ood,
      'temperature': temperature, 'num_classes': num_classes, 'seed': seed,
      'layers': layers,
      'feature_dims': {l: [int(len(coords[l])), full_dims[l]] for l in layers},
      'num_examples': {'id_train': int(len(id_train.labels)), 'id_test': int(len(id_test.labels))},
      'probe_config': {'optimizer': 'adam (torch.optim.Adam semantics)',
                       'learning_rate': probe_lr, 'weight_decay': probe_weight_decay,
                       'weight_decay_mode': 'coupled L2', 'epochs': probe_epochs,
                       'batch_size': probe_batch_size, 'standardize': standardize,
                       'max_dims': max_dims},
  }

  # ---- logits: accuracy, SR, post-softmax rank, logits norm
  with timer('logits_metrics'):
    logits = jnp.asarray(id_test.logits)
    out['test_accuracy'] = float(np.mean(np.argmax(id_test.logits, -1) == id_test.labels))
    out['solution_rank'] = int(metrics.numerical_rank(logits))
    out['post_softmax_rank'] = int(metrics.softmax_rank(logits, temperature))
    out['post_softmax_rank_T1'] = int(metrics.softmax_rank(logits, 1.0))
    out['logits_norm_frobenius'] = _f(metrics.logits_norm(logits))
    out['logits_norm_mean'] = _f(metrics.mean_per_sample_norm(logits))
    width = full_dims[penult]
    has_bias = head is not None
    out['penultimate_width'] = width
    # rank(H W + 1 b^T) <= width (+1 with a bias); also <= classes and <= examples.
    out['solution_rank_bound'] = int(min(width + int(has_bias), num_classes, len(id_test.labels)))
    out['solution_rank_bounded_by_classifier'] = bool(width + int(has_bias) < num_classes)

  # ---- per-layer representation ranks
  if layer_ranks:
    with timer('representation_ranks'):
      out['representation_rank'] = {
          l: int(metrics.numerical_rank(jnp.asarray(id_test.reps[l]))) for l in layers}
      out['representation_effective_rank'] = {
          l: _f(metrics.effective_rank(jnp.asarray(id_test.reps[l]))) for l in layers}

  # ---- ID probes
  with timer('id_probes'):
    id_acc = probes.fit_layer_probes(id_train.reps, id_train.labels, id_test.reps,
                                     id_test.labels, num_classes,
                                     key=jax.random.fold_in(probe_key, 0), config=pcfg)
  out['id_probe_accuracy'] = id_acc
  out['kappa'] = _safe(probes.effective_depth, id_acc)

  # ---- Neural collapse (ID train, penultimate features)
  with timer('neural_collapse'):
    h = jnp.asarray(id_train.reps[penult])
    classifier = None
    if head is not None:
      classifier = jnp.asarray(head[0][coords[penult]].T)  # [C, d] on the kept coordinates
    nc = metrics.neural_collapse_from_features(
        h, jnp.asarray(id_train.labels), num_classes, logits=jnp.asarray(id_train.logits),
        classifier=classifier)
    out['neural_collapse'] = {k: _f(v) for k, v in nc.items()}
    out['neural_collapse']['split'] = 'id_train'
    present = int(len(np.unique(id_train.labels)))
    if present < num_classes:  # NC assumes every class is present
      out['neural_collapse']['note_classes'] = f'only {present}/{num_classes} classes present'
    if len(coords[penult]) < full_dims[penult]:
      out['neural_collapse']['note'] = (
          f'on a random subset of {len(coords[penult])} of {full_dims[penult]} coordinates')
  del h

  if ood:
    ood_info = input_pipeline.dataset_info(ood, config.data_dir)
    with timer('extract_ood_test'):
      ood_test = _extract(dataset=ood, split='test', coords=coords, **n_test, **ex)
    with timer('extract_ood_train'):
      ood_train = _extract(dataset=ood, split='train', coords=coords, **n_train, **ex)
    out['num_examples'].update(ood_train=int(len(ood_train.labels)),
                               ood_test=int(len(ood_test.labels)))
    with timer('ood_probes'):
      ood_acc = probes.fit_layer_probes(ood_train.reps, ood_train.labels, ood_test.reps,
                                        ood_test.labels, int(ood_info.num_classes),
                                        key=jax.random.fold_in(probe_key, 1), config=pcfg)
    out['ood_probe_accuracy'] = ood_acc
    out['rho'] = _safe(probes.ood_generalization_loss, ood_acc)
    out['ood_best_layer'] = max(ood_acc, key=ood_acc.get)

    with timer('orthodev'):
      per_layer = {}
      for l in layers:
        stats = metrics.class_stats_from_features(
            jnp.asarray(id_test.reps[l]), jnp.asarray(id_test.labels), num_classes)
        per_layer[l] = _f(metrics.orthodev(stats.means,
                                           jnp.mean(jnp.asarray(ood_test.reps[l]), axis=0)))
      out['orthodev'] = per_layer[penult]
      out['orthodev_per_layer'] = per_layer

    # NECO may use another OOD set than the probes (paper: SVHN probes, CIFAR-10 detection).
    detection = config.ood_detection_dataset or ood
    det_test = ood_test
    if detection != ood:
      with timer('extract_detection_test'):
        det_test = _extract(dataset=detection, split='test', coords=coords, **n_test, **ex)
    with timer('neco'):
      dim = int(min(neco_dim or num_classes, len(coords[penult])))
      params = metrics.neco_fit(jnp.asarray(id_train.reps[penult]), dim)
      s_id = metrics.neco_score(params, jnp.asarray(id_test.reps[penult]))
      s_ood = metrics.neco_score(params, jnp.asarray(det_test.reps[penult]))
      det = {k: _f(v) for k, v in metrics.ood_metrics(s_id, s_ood, fpr_convention='neco').items()}
      det['fpr95_openood'] = _f(metrics.fpr_at_95_tpr(s_id, s_ood, convention='openood'))
      det.update(method='neco', neco_dim=dim, ood_dataset=detection, id_split='test',
                 ood_split='test',
                 fit_split='id_train',
                 fpr95_neco_convention='ID positive: fraction of OOD accepted when 95% of ID '
                                       'is kept (ViM/NECO code, paper Table 2)',
                 fpr95_openood_convention='OOD positive (OpenOOD)')
      out['ood_detection'] = det
  else:
    out['rho'] = None

  out['timings_s'] = timer.timings
  out['timings_s']['total'] = round(time.perf_counter() - t_start, 3)
  if write and distributed.is_main_process():  # every process holds the same results
    outdir = storage.workdir_path(workdir) / ANALYSIS_DIR
    outdir.mkdir(parents=True, exist_ok=True)
    if plots:
      with timer('plots'):
        write_plots(out, outdir)
      out['timings_s']['plots'] = timer.timings['plots']
    storage.write_json(outdir / 'analysis.json', out, indent=2)
    (outdir / 'analysis.md').write_text(to_markdown(out))
  return out


def config_image_shape(config) -> tuple[int, int, int]:
  from rankdeficit import input_pipeline  # pylint: disable=import-outside-toplevel
  return tuple(input_pipeline.input_shape(config))


def _safe(fn, acc):
  try:
    return fn(acc)
  except ValueError as e:  # all-zero accuracies: undefined, reported as null
    logging.warning('%s undefined: %s', fn.__name__, e)
    return None


def _fmt(x, pct=False, digits=4):
  if x is None:
    return 'n/a'
  if pct:
    return f'{100 * x:.1f}%'
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  return f'{x:.{digits}g}'


def to_markdown(a: dict) -> str:
  """Markdown report of an `analyze_run` result."""
  lines = [f"# Analysis of `{a['workdir']}` (step {a['step']})", '',
           f"{a['model']} on {a['dataset']} (T = {a['temperature']:g}), "
           f"OOD: {a['ood_dataset'] or 'none'}; examples: "
           + ', '.join(f'{k} {v}' for k, v in a['num_examples'].items()), '',
           '| metric | value |', '|---|---|']
  det = a.get('ood_detection', {})
  nc = a.get('neural_collapse', {})
  rows = [
      ('test accuracy', _fmt(a.get('test_accuracy'), pct=True)),
      ('kappa (effective depth)', _fmt(a.get('kappa'), pct=True)),
      ('rho (OOD generalization loss)', _fmt(a.get('rho'), pct=True)),
      ('SR (solution rank)', f"{_fmt(a.get('solution_rank'))} (bound {a.get('solution_rank_bound')}"
       + (', bounded by the classifier width' if a.get('solution_rank_bounded_by_classifier') else '')
       + ')'),
      (f"post-softmax rank (T = {a['temperature']:g})", _fmt(a.get('post_softmax_rank'))),
  ]
  if a['temperature'] != 1:
    rows.append(('post-softmax rank (T = 1)', _fmt(a.get('post_softmax_rank_T1'))))
  rows += [
      ('logits norm (Frobenius)', _fmt(a.get('logits_norm_frobenius'))),
      ('logits norm (mean per sample)', _fmt(a.get('logits_norm_mean'))),
      ('OrthoDev (penultimate)', _fmt(a.get('orthodev'))),
  ]
  for k in ('nc1', 'nc2_equinorm', 'nc2_equiangularity', 'nc2_max_angle', 'nc2_etf_distance',
            'nc3', 'nc4'):
    if k in nc:
      rows.append((k.upper().replace('_', ' ', 1), _fmt(nc[k])))
  if det:
    rows += [(f"NECO AUROC (d={det['neco_dim']})", _fmt(det.get('auroc'), pct=True)),
             ('NECO FPR@95 (NECO conv., ID positive)', _fmt(det.get('fpr95_neco'), pct=True)),
             ('NECO FPR@95 (OpenOOD conv., OOD positive)', _fmt(det.get('fpr95_openood'), pct=True)),
             ('NECO AUPR-In', _fmt(det.get('aupr_in'), pct=True)),
             ('NECO AUPR-Out', _fmt(det.get('aupr_out'), pct=True))]
  lines += [f'| {k} | {v} |' for k, v in rows]
  lines += ['', '| layer | coords (kept/total) | ID probe acc | OOD probe acc | rank | eff. rank | OrthoDev |',
            '|---|---|---|---|---|---|---|']
  for l in a['layers']:
    kept, total = a['feature_dims'][l]
    lines.append('| ' + ' | '.join([
        l, f'{kept}/{total}',
        _fmt(a.get('id_probe_accuracy', {}).get(l), pct=True),
        _fmt(a.get('ood_probe_accuracy', {}).get(l), pct=True),
        _fmt(a.get('representation_rank', {}).get(l)),
        _fmt(a.get('representation_effective_rank', {}).get(l)),
        _fmt(a.get('orthodev_per_layer', {}).get(l))]) + ' |')
  lines += ['', 'Timings (s): ' + ', '.join(f'{k} {v:.1f}' for k, v in a['timings_s'].items()), '']
  return '\n'.join(lines)


def _savefig(fig, outdir, name: str) -> None:
  with (storage.workdir_path(outdir) / name).open('wb') as f:  # gs:// too
    fig.savefig(f, format='png', dpi=120)


def write_plots(a: dict, outdir: str) -> None:
  """probe_accuracy.png (Figure 1 style) and representation_rank.png."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  layers = a['layers']
  x = np.arange(1, len(layers) + 1)
  title = f"{a['model']} {a['dataset']} T={a['temperature']:g}"
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(x, [a['id_probe_accuracy'][l] for l in layers], 'o-', label=f"ID ({a['dataset']})")
  if a.get('ood_probe_accuracy'):
    ax.plot(x, [a['ood_probe_accuracy'][l] for l in layers], 's-',
            label=f"OOD ({a['ood_dataset']})")
  if a.get('kappa') is not None:
    ax.axvline(a['kappa'] * len(layers), color='gray', ls=':', label=f"kappa={a['kappa']:.0%}")
  ax.set_xticks(x)
  ax.set_xlabel('layer'); ax.set_ylabel('linear probe accuracy'); ax.set_ylim(0, 1)
  ax.set_title(title); ax.legend(); ax.grid(alpha=.3)
  fig.tight_layout(); _savefig(fig, outdir, 'probe_accuracy.png')
  plt.close(fig)
  if a.get('representation_rank'):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [a['representation_rank'][l] for l in layers], 'o-', label='numerical rank')
    ax.plot(x, [a['feature_dims'][l][0] for l in layers], '--', color='gray',
            label='coordinates kept')
    ax.set_xticks(x)
    ax.set_xlabel('layer'); ax.set_ylabel('rank (ID test)'); ax.set_yscale('log')
    ax.set_title(title + f"  SR={a['solution_rank']}"); ax.legend(); ax.grid(alpha=.3)
    fig.tight_layout(); _savefig(fig, outdir, 'representation_rank.png')
    plt.close(fig)


def _define_flags():
  """CLI flags, defined only when run as a script (so importing this module is side-effect free)."""
  flags.DEFINE_string('workdir', None, 'Run directory to analyse.')
  flags.DEFINE_string('ood_dataset', None, "OOD dataset (default: the run's config.ood_dataset; "
                      "'' disables OOD metrics).")
  flags.DEFINE_string('data_dir', None, "tfds data_dir (default: the run's config.data_dir).")
  flags.DEFINE_integer('max_examples', None, 'Cap every split at a random subset of N examples.')
  flags.DEFINE_integer('max_train_examples', None, 'Overrides --max_examples for train splits.')
  flags.DEFINE_integer('probe_epochs', 50, 'Linear-probe epochs (paper: 50).')
  flags.DEFINE_integer('probe_batch_size', 4096, 'Linear-probe batch (paper: 4096).')
  flags.DEFINE_integer('max_dims', 10_000, 'Feature coordinates per layer (paper: 10,000).')
  flags.DEFINE_integer('neco_dim', None, 'NECO PCA dimension (default: number of classes).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_integer('seed', 0, 'Seed of the coordinate subsets and probe shuffling.')
  distributed.define_flags()


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required')
  distributed.initialize_from_flags()
  a = analyze_run(FLAGS.workdir, ood_dataset=FLAGS.ood_dataset, data_dir=FLAGS.data_dir,
                  max_examples=FLAGS.max_examples,
                  max_train_examples=FLAGS.max_train_examples, probe_epochs=FLAGS.probe_epochs,
                  probe_batch_size=FLAGS.probe_batch_size, max_dims=FLAGS.max_dims,
                  neco_dim=FLAGS.neco_dim, step=FLAGS.step, seed=FLAGS.seed)
  if distributed.is_main_process():
    print(to_markdown(a))
    print(f'Wrote {storage.workdir_path(FLAGS.workdir) / ANALYSIS_DIR}/')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
