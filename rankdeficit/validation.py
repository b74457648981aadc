"""Checks a config before anything is compiled or trained.

Every error names the offending field and how to fix it, so a sweep fails in seconds
rather than after an XLA compile or an hour of training.
"""
import os

import jax
import ml_collections

from rankdeficit import input_pipeline, losses, models, optim, storage

AUGMENTATIONS = ('cifar', 'imagenet', 'vit', 'none')


def validate_config(config: ml_collections.ConfigDict, workdir: str | None = None,
                    num_devices: int | None = None) -> input_pipeline.DatasetInfo:
  """Raises ValueError / DatasetNotFoundError / PermissionError for a bad config.

  Returns the training dataset's `DatasetInfo` (looking it up is part of the check).
  """
  if config.model.name not in models.MODEL_NAMES:
    raise ValueError(f'Unknown model {config.model.name!r} (config.model.name); choose one '
                     f'of {", ".join(models.MODEL_NAMES)}.')
  if config.dataset not in input_pipeline.DATASET_NAMES:
    raise ValueError(f'Unknown dataset {config.dataset!r} (config.dataset); choose one of '
                     f'{", ".join(input_pipeline.DATASET_NAMES)}.')
  if config.ood_dataset and config.ood_dataset not in input_pipeline.DATASET_NAMES:
    raise ValueError(f'Unknown OOD dataset {config.ood_dataset!r} (config.ood_dataset); '
                     f'choose one of {", ".join(input_pipeline.DATASET_NAMES)} or "".')
  if not config.temperature > 0:
    raise ValueError(f'config.temperature must be > 0, got {config.temperature}.')
  if config.final_temperature is not None and not config.final_temperature > 0:
    raise ValueError(f'config.final_temperature must be > 0, got {config.final_temperature}.')
  if config.temperature_schedule not in losses.TEMPERATURE_SCHEDULES:
    raise ValueError(f'Unknown temperature_schedule {config.temperature_schedule!r}; choose '
                     f'one of {losses.TEMPERATURE_SCHEDULES}.')
  if config.loss not in losses.LOSS_NAMES:
    raise ValueError(f'Unknown loss {config.loss!r}; choose one of {losses.LOSS_NAMES}.')
  if config.optimizer not in optim.OPTIMIZER_NAMES:
    raise ValueError(f'Unknown optimizer {config.optimizer!r}; choose one of '
                     f'{optim.OPTIMIZER_NAMES}.')
  if config.augment not in AUGMENTATIONS:
    raise ValueError(f'Unknown augment {config.augment!r}; choose one of {AUGMENTATIONS}.')
  if config.learning_rate <= 0:
    raise ValueError(f'config.learning_rate must be > 0, got {config.learning_rate}.')
  n = jax.device_count() if num_devices is None else num_devices
  for field in ('batch_size', 'eval_batch_size', 'metrics_batch_size'):
    size = config[field]
    if size <= 0 or size % n or size % jax.process_count():
      raise ValueError(
          f'config.{field}={size} must be a positive multiple of the number of devices '
          f'({n}) and of processes ({jax.process_count()}); try {max(n, size // n * n)}.')
  path = config.model.pretrained_path
  if path and not config.model.name.startswith('vit'):
    raise ValueError(f'config.model.pretrained_path is only supported for ViT models, not '
                     f'{config.model.name!r}.')
  if path and not os.path.isfile(path):
    raise ValueError(f'config.model.pretrained_path={path!r} does not exist: give a local '
                     f'.npz of ViT weights (public big_vision/ViT naming); nothing is '
                     f'downloaded.')
  if workdir is not None:
    _check_writable(workdir)
  info = input_pipeline.dataset_info(config.dataset, config.data_dir)
  if config.model.num_classes is not None and config.model.num_classes < info.num_classes:
    raise ValueError(f'config.model.num_classes={config.model.num_classes} is smaller than '
                     f'the {info.num_classes} classes of {config.dataset}.')
  # The OOD set is only needed by the analysis (rankdeficit.analyze), which checks it there.
  return info


def _check_writable(workdir: str) -> None:
  # Through epath: the workdir may be a bucket (gs://) on a TPU pod.
  storage.check_writable(workdir)
