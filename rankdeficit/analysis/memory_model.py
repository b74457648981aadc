"""What an analysis will hold where, computed before running it: per-process host bytes and
per-device bytes of the features, the probes and the TSQR / Gram factors, for a config on
a given pod shape (`python -m rankdeficit.analyze --plan_only --plan_config=...`).

Reads only the config: the layer widths come from the model's shapes (`jax.eval_shape`,
no parameters, no checkpoint), the split sizes from the datasets' published sizes
(`SPLIT_SIZES`; other datasets are looked up in the data_dir). The features are laid out as
the analysis lays them out (`memory_plan.device_rows`), and the layer groups (extraction
passes) are those `memory_plan.plan_layer_groups` makes with the budget an accelerator of
`hbm_gib` gets (`AnalysisConfig.device_memory_fraction`). Estimates, not measurements:
XLA's workspaces and fragmentation come on top.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.analysis import extraction
from rankdeficit.analysis import memory_plan
from rankdeficit.analysis import probes
from rankdeficit.analysis.config import AnalysisConfig

GIB = 2**30
# (train, test) examples of each split as the datasets publish them (test: ImageNet's
# validation split). tiny_imagenet32: Tiny ImageNet's 100,000 train / 10,000 val images.
SPLIT_SIZES = {
  'cifar10': (50_000, 10_000),
  'cifar10_jpeg': (50_000, 10_000),
  'cifar100': (50_000, 10_000),
  'svhn_cropped': (73_257, 26_032),
  'mnist': (60_000, 10_000),
  'tiny_imagenet32': (100_000, 10_000),
  'imagenet2012': (1_281_167, 50_000),
  'imagenet100': (126_689, 5_000),
}


@dataclasses.dataclass(frozen=True)
class PodShape:
  """Processes x devices per process, each device with `hbm_gib` of memory."""

  processes: int
  local_devices: int
  hbm_gib: float

  @property
  def devices(self) -> int:
    return self.processes * self.local_devices


def load_config(name: str):
  """`get_config()` of a config module: 'resnet50_in1k', 'configs.resnet50_in1k' or the
  file 'configs/resnet50_in1k.py' (run from the repository root)."""
  module = name.removesuffix('.py').replace('/', '.')
  if '.' not in module:
    module = f'configs.{module}'
  return importlib.import_module(module).get_config()


def _split_rows(config, analysis: AnalysisConfig) -> dict[str, int]:
  """Rows of every split the analysis reads (`extraction.split_sources`)."""
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  out = {}
  sources = extraction.split_sources(
    config, max_examples=analysis.max_examples, max_train_examples=analysis.max_train_examples
  )
  for name, (dataset, split, cap) in sources.items():
    datasets.get_spec(dataset)  # an unknown name: the registry's error
    if dataset in SPLIT_SIZES:
      n = SPLIT_SIZES[dataset][split != 'train']
    else:
      info = input_pipeline.dataset_info(dataset, config.data_dir)
      n = info.num_train if split == 'train' else info.num_test
    out[name] = min(n, cap) if cap else n
  return out


def _model_shapes(config, max_dims: int):
  """(num_classes, {layer: (full width, kept)}, parameter floats, activation floats of one
  example over every layer), from shapes only."""
  from rankdeficit import models  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  classes = datasets.get_spec(config.dataset).num_classes
  model = models.measurement_model(models.create_model(config.model, classes))
  image = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), image)
  _, reps = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, image)
  full = {k: int(np.prod(r.shape[1:])) for k, r in reps.items()}
  widths = {k: (d, min(d, max_dims) if max_dims and max_dims > 0 else d) for k, d in full.items()}
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))
  return classes, widths, params, sum(full.values())


@dataclasses.dataclass(frozen=True)
class Layout:
  """The analysis's sizes for one config on one pod shape (`layout`)."""

  rows: dict[str, int]  # real rows of every split
  device_rows: dict[str, int]  # rows (padding included) each device holds of every split
  kept: dict[str, int]  # kept coordinates of every hidden layer, forward order
  full: dict[str, int]  # their full widths
  classes: int
  params: int  # parameter floats
  activations: int  # floats of one example over every layer
  groups: list[list[str]]  # extraction passes
  local_batch: int  # eval examples per process per step


def layout(config, analysis: AnalysisConfig, shape: PodShape) -> Layout:
  """Split sizes, rows per device, layer widths and extraction passes (`memory_plan`)."""
  rows = _split_rows(config, analysis)
  classes, widths, params, activations = _model_shapes(config, analysis.max_dims)
  batch = int(analysis.batch_size or config.eval_batch_size)
  per_device = memory_plan.device_rows(
    rows, batch_size=batch, processes=shape.processes, local_devices=shape.local_devices
  )
  kept = {l: k for l, (_, k) in widths.items()}
  budget = memory_plan.device_budget(
    analysis.max_feature_gib,
    analysis.device_memory_fraction,
    device_bytes=int(shape.hbm_gib * GIB),
    local_devices=shape.local_devices,
  )
  groups = memory_plan.plan_layer_groups(kept, sum(per_device.values()), budget)
  full = {l: d for l, (d, _) in widths.items()}
  return Layout(
    rows, per_device, kept, full, classes, params, activations, groups, batch // shape.processes
  )


def _feature_bytes(lay: Layout, layers) -> int:
  """Bytes one device holds of `layers` over every split, with each split's logits,
  post-softmax layer, labels and ids."""
  held = sum(lay.device_rows.values())
  return 4 * held * sum(lay.kept[l] for l in layers) + held * (8 * lay.classes + 8)


def _probe_bytes(lay: Layout, cfg: probes.ProbeConfig, shape: PodShape) -> tuple[int, int]:
  """(per device, per process host) of the probes of the largest vmapped group."""
  n = max(v for k, v in lay.rows.items() if k.endswith('train'))
  r = max(v for k, v in lay.device_rows.items() if k.endswith('train'))
  widths = [*lay.kept.values(), lay.classes, lay.classes]
  groups = probes.plan_groups(widths, n, cfg.max_group_bytes)
  size, dmax = max((len(g) * max(widths[i] for i in g), max(widths[i] for i in g)) for g in groups)
  layers = size // dmax
  bs = min(cfg.batch_size, n)
  per_step = bs / shape.devices
  m = min(r, math.ceil(per_step + 4 * math.sqrt(per_step)) + 1)  # rows of one batch per device
  steps = math.ceil(n / bs)
  device = 4 * (
    layers * r * dmax  # the stacked group
    + 4 * layers * (dmax + 1) * lay.classes  # probe, gradient, Adam moments
    + 2 * layers * m * (dmax + lay.classes)  # a mini-batch and its logits
    + cfg.num_epochs * steps * m  # the mini-batch tables
  )
  # the shuffles (orders, positions, steps), and each local device's sorted rows
  host = 4 * 3 * cfg.num_epochs * n + 8 * 3 * cfg.num_epochs * r * shape.local_devices
  return device, host


def _factor_bytes(lay: Layout) -> int:
  """TSQR (widest layer on ID test: the block, its rescaled copy, the tree's factors and
  the SVD's workspace) or the d x d matrices of NC / NECO (penultimate layer): the larger."""
  k = max(lay.kept.values())
  rows = lay.device_rows['id_test']
  tsqr_bytes = 4 * (2 * rows * k + 5 * min(k, lay.rows['id_test']) * k + 3 * k * k)
  penult = lay.kept[list(lay.kept)[-1]]
  train = lay.device_rows['id_train']
  collapse = 4 * (2 * train * penult + 4 * penult * penult + 2 * lay.classes * penult)
  return max(tsqr_bytes, collapse)


def _host_sources(config, analysis: AnalysisConfig) -> int:
  """Bytes of the fixed-size datasets an analysis decodes into host memory (uint8 images,
  every split read; `config.in_memory`), per process."""
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  if not config.get('in_memory', False):
    return 0
  sources = extraction.split_sources(
    config, max_examples=analysis.max_examples, max_train_examples=analysis.max_train_examples
  )
  total = 0
  for dataset, split in {(d, sp) for d, sp, _ in sources.values()}:
    spec = datasets.get_spec(dataset)
    if not spec.variable_size and dataset in SPLIT_SIZES:
      total += SPLIT_SIZES[dataset][split != 'train'] * int(np.prod(spec.image_shape))
  return total


def memory_rows(config, analysis: AnalysisConfig, shape: PodShape):
  """(layout, [(what, bytes per device, host bytes per process)]) of one analysis."""
  lay = layout(config, analysis, shape)
  feats = max(_feature_bytes(lay, g) for g in lay.groups)
  image = config.image_size**2 * 3
  extraction_device = 4 * math.ceil(lay.local_batch / shape.local_devices) * (
    lay.activations + image
  ) + 4 * max(lay.kept.values()) * max(lay.device_rows.values())
  pipeline = 4 * 3 * lay.local_batch * image  # the batch being read and 2 prefetched
  probe_device, probe_host = _probe_bytes(lay, analysis.probe, shape)
  factors, params = _factor_bytes(lay), 4 * lay.params
  loaded = params + _host_sources(config, analysis)  # the checkpoint, decoded datasets
  detection = lay.rows.get('det_test', lay.rows.get('ood_test', 0))
  scores = 4 * 3 * (lay.rows['id_test'] + detection)
  classes = 2 * lay.classes  # logits and post-softmax, the probed final layers
  gathered = 4 * sum(lay.rows.values()) * (sum(lay.kept.values()) + classes)
  table = [
    (f'features, one layer group ({len(lay.groups)} extraction pass(es))', feats, 0),
    ('features, every layer at once', _feature_bytes(lay, lay.kept), 0),
    ('extraction: forward of one batch, one layer joined', extraction_device, pipeline),
    ('model parameters (replicated); host: checkpoint, in-memory datasets', params, loaded),
    ('probes: stacked group, Adam state, a mini-batch; shuffles', probe_device, probe_host),
    ('TSQR factors / NC, NECO d x d matrices', factors, 0),
    ('NECO scores (gathered: n floats per split)', 0, scores),
    (
      'peak: a group + parameters + the largest step',
      feats + params + max(extraction_device, probe_device, factors),
      loaded + pipeline + probe_host + scores,
    ),
    ('before: every split of every layer gathered on every host', 0, gathered),
  ]
  return lay, table


def _gib(x: int) -> str:
  return f'{x / GIB:.2f} GiB' if x else '-'


def format_table(config, analysis: AnalysisConfig, shape: PodShape) -> str:
  """The memory plan as Markdown: the layout, then bytes per device, per process on its
  devices and per process on the host."""
  lay, table = memory_rows(config, analysis, shape)
  coords = sum(lay.kept.values())
  lines = [
    f'Analysis memory plan: {config.model.name} on {config.dataset} (OOD '
    f'{config.ood_dataset or "none"}), {shape.processes} process(es) x {shape.local_devices} '
    f'device(s) = {shape.devices}, {shape.hbm_gib:g} GiB per device.',
    'Rows: '
    + ', '.join(f'{k} {v:,}' for k, v in lay.rows.items())
    + '; per device (with padding): '
    + ', '.join(f'{k} {v:,}' for k, v in lay.device_rows.items())
    + '.',
    f'{len(lay.kept)} hidden layers + logits + softmax, {coords:,} kept coordinates '
    f'(of {sum(lay.full.values()):,}); layer groups: {lay.groups}.',
    '',
    '| | per device | per process, on its devices | per process, host |',
    '|---|---|---|---|',
  ]
  for what, device, host in table:
    lines.append(
      f'| {what} | {_gib(device)} | {_gib(device * shape.local_devices)} | {_gib(host)} |'
    )
  return '\n'.join(lines)
