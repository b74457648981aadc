"""The input pipeline and its data helpers.

- `input_pipeline`: grain train/eval iterators over tfds (or in-memory) sources, sharded
  per process; dataset info and steps per epoch.

- `datasets`: dataset registry (names, classes, normalisation), tfds/in-memory sources,
  ImageNet-100 class list (`imagenet100_classes.txt`, CMC), OOD pairs.
- `augment`: per-example grain transforms (CIFAR crop+flip, RandomResizedCrop, ColorJitter).
- `device_preprocess`: the jitted end of the augment=imagenet/vit transform (colour jitter,
  normalisation of uint8 batches) that `steps.train_step` runs on the device.
- `local_import`: writes local files (../shared/data, image folders, zips, .npz) as
  array_record tfds datasets; CLI: `python -m tools.import_data`.
"""

from rankdeficit.data.datasets import DATASET_NAMES
from rankdeficit.data.datasets import DatasetNotFoundError
from rankdeficit.data.datasets import ood_pair

__all__ = ['DATASET_NAMES', 'DatasetNotFoundError', 'ood_pair']
