"""Checks a config before anything is compiled or trained.

Every error names the offending field and how to fix it, so a sweep fails in seconds
rather than after an XLA compile or an hour of training.
"""

import math
import os
import zipfile

import jax
import ml_collections
import numpy as np

from rankdeficit import models
from rankdeficit.data import datasets
from rankdeficit.data import device_data
from rankdeficit.data import input_pipeline
from rankdeficit.run import storage
from rankdeficit.training import losses
from rankdeficit.training import optim

AUGMENTATIONS = ('cifar', 'imagenet', 'vit', 'none')
MAX_SEED = 2**32 - 1  # grain's samplers take a 32-bit seed


def validate_config(
  config: ml_collections.ConfigDict,
  workdir: str | None = None,
  num_devices: int | None = None,
  *,
  create: bool = True,
) -> input_pipeline.DatasetInfo:
  """Raises ValueError / DatasetNotFoundError / PermissionError for a bad config.

  Every check runs before anything compiles; with `create=False` nothing is written (the
  workdir is only checked to be creatable), so an invalid config leaves no trace on disk.
  Returns the training dataset's `DatasetInfo` (looking it up is part of the check).
  """
  validate_fields(config, num_devices)
  path = config.model.pretrained_path
  if path and not os.path.isfile(path):
    raise ValueError(
      f'config.model.pretrained_path={path!r} does not exist: give a local '
      f'.npz of ViT weights (public big_vision/ViT naming); nothing is '
      f'downloaded.'
    )
  if path:
    _check_npz(path)
  if workdir is not None and create:
    _check_writable(workdir)
  elif workdir is not None:
    _check_creatable(workdir)
  datasets.ensure_available(config.dataset, config.data_dir, config.download)
  info = input_pipeline.dataset_info(config.dataset, config.data_dir)
  available = min(info.num_train, config.train_subset or info.num_train)
  if config.batch_size > available:
    raise ValueError(
      f'config.batch_size={config.batch_size} is larger than the {available} '
      f'training examples of {config.dataset} (config.train_subset='
      f'{config.train_subset}); use a smaller batch_size.'
    )
  if config.model.num_classes is not None and config.model.num_classes < info.num_classes:
    raise ValueError(
      f'config.model.num_classes={config.model.num_classes} is smaller than '
      f'the {info.num_classes} classes of {config.dataset}.'
    )
  # The OOD set is only needed by the analysis (rankdeficit.analyze), which checks it there.
  return info


def validate_fields(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """The checks of `validate_config` that read nothing but the config itself.

  Names, numeric ranges and batch sizes (against `num_devices`, default: this process's
  `jax.device_count()`): what a sweep checks for every point before it submits a job,
  where the data, files and workdir are those of the machine the job will run on.
  Raises ValueError naming the field.
  """
  _check_numbers(config)
  if config.model.name not in models.MODEL_NAMES:
    raise ValueError(
      f'Unknown model {config.model.name!r} (config.model.name); choose one '
      f'of {", ".join(models.MODEL_NAMES)}.'
    )
  if config.dataset not in input_pipeline.DATASET_NAMES:
    raise ValueError(
      f'Unknown dataset {config.dataset!r} (config.dataset); choose one of '
      f'{", ".join(input_pipeline.DATASET_NAMES)}.'
    )
  if config.ood_dataset and config.ood_dataset not in input_pipeline.DATASET_NAMES:
    raise ValueError(
      f'Unknown OOD dataset {config.ood_dataset!r} (config.ood_dataset); '
      f'choose one of {", ".join(input_pipeline.DATASET_NAMES)} or "".'
    )
  _check_choices(config)
  _check_device_input(config)
  n = jax.device_count() if num_devices is None else num_devices
  for field in ('batch_size', 'eval_batch_size', 'metrics_batch_size'):
    size = config[field]
    if size <= 0 or size % n or size % jax.process_count():
      raise ValueError(
        f'config.{field}={size} must be a positive multiple of the number of devices '
        f'({n}) and of processes ({jax.process_count()}); try {max(n, size // n * n)}.'
      )
  if config.model.pretrained_path and not config.model.name.startswith('vit'):
    raise ValueError(
      f'config.model.pretrained_path is only supported for ViT models, not {config.model.name!r}.'
    )


def _check_choices(config: ml_collections.ConfigDict) -> None:
  """Fields that name one of a fixed set of choices."""
  if config.temperature_schedule not in losses.TEMPERATURE_SCHEDULES:
    raise ValueError(
      f'Unknown temperature_schedule {config.temperature_schedule!r}; choose '
      f'one of {losses.TEMPERATURE_SCHEDULES}.'
    )
  if config.loss not in losses.LOSS_NAMES:
    raise ValueError(f'Unknown loss {config.loss!r}; choose one of {losses.LOSS_NAMES}.')
  if config.optimizer not in optim.OPTIMIZER_NAMES:
    raise ValueError(
      f'Unknown optimizer {config.optimizer!r}; choose one of {optim.OPTIMIZER_NAMES}.'
    )
  if config.augment not in AUGMENTATIONS:
    raise ValueError(f'Unknown augment {config.augment!r}; choose one of {AUGMENTATIONS}.')


def _check_device_input(config: ml_collections.ConfigDict) -> None:
  """input_on_device (data/device_data.py) and steps_per_dispatch."""
  on_device = config.get('input_on_device', False)
  per_dispatch = config.get('steps_per_dispatch', 1)
  _require(isinstance(on_device, bool), 'input_on_device', on_device, 'True or False')
  _require(
    isinstance(per_dispatch, int) and not isinstance(per_dispatch, bool) and per_dispatch >= 1,
    'steps_per_dispatch',
    per_dispatch,
    'an integer >= 1',
  )
  if per_dispatch > 1 and not on_device:
    raise ValueError(
      f'config.steps_per_dispatch={per_dispatch} needs config.input_on_device=True (the '
      f'grain input pipeline feeds one step per call).'
    )
  if not on_device:
    return
  if not (
    datasets.holds_in_memory(config.dataset) or datasets.get_spec(config.dataset).kind == 'memory'
  ):
    raise ValueError(
      f'config.input_on_device=True needs a dataset held in memory, not {config.dataset!r} '
      f'(too large to put on the devices); set input_on_device=False.'
    )
  if config.augment not in device_data.AUGMENTS:
    raise ValueError(
      f'config.input_on_device=True draws augment in {device_data.AUGMENTS} on the devices, '
      f'not {config.augment!r}; set input_on_device=False for it.'
    )


def _check_writable(workdir: str) -> None:
  # Through epath: the workdir may be a bucket (gs://) on a TPU pod.
  storage.check_writable(workdir)


def _require(ok: bool, field: str, value, rule: str) -> None:
  if not ok:
    raise ValueError(f'config.{field}={value!r} is invalid: it must be {rule}.')


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def _check_numbers(config: ml_collections.ConfigDict) -> None:
  """Numeric fields: ranges that would otherwise divide by zero, NaN or silently no-op."""
  seed = config.seed
  _require(
    isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED,
    'seed',
    seed,
    f'an integer in [0, {MAX_SEED}] (grain shuffles with a 32-bit seed)',
  )
  _check_temperature(config)
  _check_optimizer_numbers(config)
  _check_budget(config)
  _check_sizes(config)


def _check_optimizer_numbers(config: ml_collections.ConfigDict) -> None:
  """learning_rate, momentum, weight_decay, warmup_epochs and lr_gamma."""
  _require(
    _finite(config.learning_rate) and config.learning_rate > 0,
    'learning_rate',
    config.learning_rate,
    'a finite number > 0',
  )
  for field in ('momentum', 'weight_decay', 'warmup_epochs'):
    _require(
      _finite(config[field]) and config[field] >= 0, field, config[field], 'a finite number >= 0'
    )
  _require(
    _finite(config.lr_gamma) and config.lr_gamma > 0,
    'lr_gamma',
    config.lr_gamma,
    'a finite number > 0',
  )


def _check_budget(config: ml_collections.ConfigDict) -> None:
  """The training budget (num_epochs / num_train_steps) and the step cadences."""
  _require(
    _finite(config.num_epochs) and config.num_epochs >= 0,
    'num_epochs',
    config.num_epochs,
    'a finite number >= 0',
  )
  _require(
    config.num_train_steps == -1 or config.num_train_steps > 0,
    'num_train_steps',
    config.num_train_steps,
    '> 0, or -1 for num_epochs epochs',
  )
  if config.num_train_steps == -1:
    _require(
      config.num_epochs > 0,
      'num_epochs',
      config.num_epochs,
      '> 0 when num_train_steps=-1 (or set num_train_steps)',
    )
  for field in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    _require(config[field] >= 1, field, config[field], 'an integer >= 1')
  _require(
    config.eval_every_steps == -1 or config.eval_every_steps >= 1,
    'eval_every_steps',
    config.eval_every_steps,
    '>= 1, or -1 for once per epoch',
  )


def _check_sizes(config: ml_collections.ConfigDict) -> None:
  """Counts and sizes: subsets, workers, image and feature sizes, the model's shape."""
  for field in ('metrics_every_steps', 'train_subset', 'num_workers'):
    _require(config[field] >= 0, field, config[field], 'an integer >= 0 (0 = off/all)')
  _require(config.image_size >= 1, 'image_size', config.image_size, 'an integer >= 1')
  _require(
    config.device_resize_canvas == 0 or config.device_resize_canvas >= config.image_size,
    'device_resize_canvas',
    config.device_resize_canvas,
    '0 (resize on the host) or >= image_size',
  )
  _require(
    config.max_feature_dims >= 1, 'max_feature_dims', config.max_feature_dims, 'an integer >= 1'
  )
  for field in ('width', 'depth'):
    _require(config.model[field] >= 1, f'model.{field}', config.model[field], 'an integer >= 1')
  if config.model.num_classes is not None:
    _require(
      config.model.num_classes >= 1,
      'model.num_classes',
      config.model.num_classes,
      'an integer >= 1 or None',
    )


def _check_temperature(config: ml_collections.ConfigDict) -> None:
  """temperature, final_temperature, its schedule and target_logits_norm."""
  target = config.get('target_logits_norm', 0.0)
  _require(
    _finite(target) and target >= 0, 'target_logits_norm', target, 'a finite number >= 0 (0 = off)'
  )
  if target > 0:
    _require(
      config.temperature_schedule == 'constant',
      'temperature_schedule',
      config.temperature_schedule,
      "'constant' when target_logits_norm > 0",
    )
  _require(
    _finite(config.temperature) and config.temperature > 0,
    'temperature',
    config.temperature,
    'a finite number > 0 (the softmax temperature T)',
  )
  final, schedule = config.final_temperature, config.temperature_schedule
  if final is not None:
    _require(
      _finite(final) and final > 0, 'final_temperature', final, 'a finite number > 0 or None'
    )
  if schedule in ('linear', 'cosine', 'step'):
    _require(
      final is not None,
      'final_temperature',
      final,
      f'a finite number > 0 with temperature_schedule={schedule!r} (the temperature it ends at)',
    )
  if schedule == 'step':
    milestones = tuple(config.temperature_milestones)
    _require(
      bool(milestones) and all(_finite(m) and m > 0 for m in milestones),
      'temperature_milestones',
      milestones,
      "a non-empty list of epochs > 0 with temperature_schedule='step'",
    )


def _check_npz(path: str) -> None:
  """The pretrained file must be an .npz of plain (non-object) arrays."""
  fix = 'give a local .npz of ViT weights (public big_vision/ViT naming)'
  if not zipfile.is_zipfile(path):
    raise ValueError(f'config.model.pretrained_path={path!r} is not an .npz archive; {fix}.')
  try:
    with np.load(path, allow_pickle=False) as f:
      for key in f.files:
        f[key]  # pylint: disable=pointless-statement
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f'config.model.pretrained_path={path!r} cannot be read ({e}); {fix}.') from e


def _check_creatable(workdir: str) -> None:
  """The workdir exists as a writable directory, or its nearest ancestor does."""
  if storage.is_uri(workdir):
    return  # a bucket: checked by writing to it (storage.check_writable) once valid
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise PermissionError(
      f'The workdir {workdir!r} is a file, not a directory; choose another --workdir.'
    )
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
    raise PermissionError(
      f'The workdir {workdir!r} is not writable ({path} is not a '
      f'writable directory); choose another --workdir.'
    )
