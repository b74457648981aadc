"""Dataset registry and random-access sources (tfds array_record, or in memory for `digits`).

Every dataset is read as a random-access source of {'image': uint8 HWC, 'label': int}
records: `tfds.data_source(...)` (array_record files in a tfds data_dir) for all but
`digits`, which is built in memory from scikit-learn's bundled copy of the UCI digits.

Normalisation constants (per-channel mean/std in [0, 1] units, of the training split):
- cifar10, cifar10_jpeg: the standard CIFAR-10 values (the JPEG copy's std is ~0.002 lower);
- cifar100, svhn_cropped, imagenet2012/imagenet100: the standard values of each;
- mnist: 0.1307 / 0.3081 on all three (replicated) channels;
- tiny_imagenet32: measured on the 20,000-image 32x32 train file in ../shared/data;
- digits: measured on the digits train split at 8x8 (values 0..16 scaled to 0..255).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
import socket
import threading
from typing import Any

import numpy as np

from rankdeficit.data import memory

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
VIT_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class DatasetNotFoundError(Exception):
  """The dataset's files are not in the data_dir; the message names the fixing command."""


@dataclasses.dataclass(frozen=True)
class Spec:
  num_classes: int
  image_shape: tuple  # native (H, W, C); None entries for variable-size images
  mean: tuple
  std: tuple
  kind: str  # 'download' (tfds downloads it) | 'manual' (imagenet) | 'offline' | 'memory'
  tfds_name: str | None = None
  splits: tuple = (('train', 'train'), ('test', 'test'))  # our split -> tfds split
  class_sorted: bool = False  # records grouped by class (a prefix holds few classes)

  @property
  def variable_size(self) -> bool:
    return self.image_shape[0] is None


_IMAGENET_SPLITS = (('train', 'train'), ('test', 'validation'), ('validation', 'validation'))
SPECS: dict[str, Spec] = {
  'cifar10': Spec(10, (32, 32, 3), *CIFAR10_STATS, 'download', 'cifar10'),
  'cifar100': Spec(
    100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 'download', 'cifar100'
  ),
  'svhn_cropped': Spec(
    10, (32, 32, 3), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 'download', 'svhn_cropped'
  ),
  'imagenet2012': Spec(
    1000, (None, None, 3), *IMAGENET_STATS, 'manual', 'imagenet2012', _IMAGENET_SPLITS
  ),
  'imagenet100': Spec(
    100, (None, None, 3), *IMAGENET_STATS, 'manual', 'imagenet2012', _IMAGENET_SPLITS
  ),
  'mnist': Spec(10, (28, 28, 1), (0.1307,) * 3, (0.3081,) * 3, 'offline', 'mnist'),
  'cifar10_jpeg': Spec(10, (32, 32, 3), *CIFAR10_STATS, 'offline', 'cifar10_jpeg'),
  'tiny_imagenet32': Spec(
    200,
    (32, 32, 3),
    (0.4819, 0.4496, 0.3991),
    (0.2618, 0.2535, 0.2679),
    'offline',
    'tiny_imagenet32',
    class_sorted=True,
  ),  # as ../shared/data stores it
  'digits': Spec(10, (8, 8, 1), (0.3048,) * 3, (0.3755,) * 3, 'memory'),
}
DATASET_NAMES = tuple(SPECS)

# Default OOD partner of each training set (SPEC section 2/4).
_FAR_OOD = {
  'cifar10': 'svhn_cropped',
  'cifar100': 'svhn_cropped',
  'svhn_cropped': 'cifar10',
  'imagenet2012': 'cifar100',
  'imagenet100': 'cifar100',
  'cifar10_jpeg': 'mnist',
  'tiny_imagenet32': 'mnist',
  'mnist': 'cifar10_jpeg',
  'digits': 'mnist',
}
_NEAR_OOD = {
  'cifar10': 'cifar100',
  'cifar100': 'cifar10',
  'cifar10_jpeg': 'tiny_imagenet32',
  'tiny_imagenet32': 'cifar10_jpeg',
  'imagenet2012': 'cifar100',
  'imagenet100': 'cifar100',
  'svhn_cropped': 'mnist',
  'mnist': 'digits',
  'digits': 'mnist',
}


def subset_indices(name: str, size: int, n: int) -> np.ndarray:
  """Indices of an n-example subset of a split of `size` records: the first n, or n evenly
  spaced through the split when its records are grouped by class (every class kept)."""
  if not get_spec(name).class_sorted:
    return np.arange(n)
  return np.arange(n) * size // n


def get_spec(name: str) -> Spec:
  if name not in SPECS:
    raise ValueError(f'Unknown dataset {name!r}; valid names: {", ".join(DATASET_NAMES)}.')
  return SPECS[name]


def ood_pair(dataset: str, kind: str = 'far') -> str:
  """Default OOD dataset for `dataset`: 'far' (digits-like / SVHN) or 'near' (CIFAR-100,
  Tiny-ImageNet). CIFAR -> svhn_cropped (far), cifar10 <-> cifar100 (near), ImageNet ->
  cifar100 (resized); offline: cifar10_jpeg -> mnist (far), cifar10_jpeg <-> tiny_imagenet32."""
  get_spec(dataset)
  table = {'far': _FAR_OOD, 'near': _NEAR_OOD}.get(kind)
  if table is None:
    raise ValueError(f"ood_pair kind must be 'far' or 'near', got {kind!r}.")
  return table[dataset]


def resolve_data_dir(data_dir: str | None) -> str:
  return os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


def is_decoded_in_memory(name: str, split: str, data_dir: str | None) -> bool:
  """Whether `open_source(..., in_memory=True)` would return an already decoded split."""
  return memory.is_decoded(name, split, resolve_data_dir(data_dir))


def fix_command(name: str, data_dir: str | None) -> str:
  spec, d = get_spec(name), resolve_data_dir(data_dir)
  if spec.kind == 'offline':
    return (
      f'python -m tools.import_data {name} --data_dir={d} '
      f'[--source=/path/to/shared/data]  (imports the local files of ../shared/data)'
    )
  if spec.kind == 'manual':
    return (
      f'put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (image-net.org) in '
      f'MANUAL_DIR, then: python -m tools.import_data imagenet2012 --data_dir={d} '
      f'--manual_dir=MANUAL_DIR'
      + (
        '  (imagenet100 is read from imagenet2012 with the CMC class list)'
        if name == 'imagenet100'
        else ''
      )
    )
  return (
    f'on a machine with internet: python -m tools.import_data {name} --data_dir={d} '
    f'--download  (tfds download_and_prepare, file_format=array_record), then copy '
    f'{d}/{spec.tfds_name} into the data_dir here. Offline, train on cifar10_jpeg '
    f'(python -m tools.import_data cifar10_jpeg --data_dir={d}) with mnist as OOD set.'
  )


class DigitsSource:
  """scikit-learn's 1,797 UCI 8x8 digits in memory. Deterministic split: test = the
  examples whose index i (sklearn order) has i % 5 == 4 (359), train = the rest (1,438).
  Pixels 0..16 are scaled to uint8 0..255; the pipeline resizes them to image_size."""

  def __init__(self, split: str):
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    keep = (np.arange(len(digits.target)) % 5 == 4) == (split == 'test')
    self._images = np.rint(digits.images[keep] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    self._labels = digits.target[keep].astype(np.int64)
    self._split = split

  def __len__(self) -> int:
    return len(self._labels)

  def __repr__(self) -> str:  # stable across processes, for grain checkpoint validation
    return f'DigitsSource(split={self._split!r}, n={len(self._labels)})'

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'image': self._images[index], 'label': self._labels[index]}


class IndexedSource:
  """A view of `base` restricted to `indices`, optionally remapping labels (picklable)."""

  def __init__(self, base, indices, label_map: dict[int, int] | None = None):
    self._base = base
    self._indices = np.asarray(indices, np.int64)
    self._label_map = label_map

  def __len__(self) -> int:
    return len(self._indices)

  def __repr__(self) -> str:
    # Grain compares repr(source) when restoring a checkpoint: make it describe the data,
    # not the object's address, so a resumed process accepts its own checkpoint.
    digest = hashlib.sha1(self._indices.tobytes()).hexdigest()[:12]
    return (
      f'IndexedSource(base={self._base!r}, n={len(self._indices)}, indices={digest}, '
      f'label_map={sorted(self._label_map.items()) if self._label_map else None})'
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._base[int(self._indices[index])]
    if self._label_map is not None:
      record = dict(record, label=self._label_map[int(record['label'])])
    return record


def _tfds_source(name: str, tfds_split: str, data_dir: str | None, decoders=None):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  spec = get_spec(name)
  try:
    return tfds.data_source(
      spec.tfds_name, split=tfds_split, data_dir=data_dir, download=False, decoders=decoders
    )
  except (
    tfds.core.registered.DatasetNotFoundError,
    NotImplementedError,
    AssertionError,
    FileNotFoundError,
    ValueError,
    KeyError,
  ) as e:
    # KeyError: "Trying to access splits['train'] but splits is empty" (never prepared).
    raise DatasetNotFoundError(
      f'Dataset {name!r} (split {tfds_split!r}) is not available as an array_record tfds '
      f'dataset in data_dir {resolve_data_dir(data_dir)!r}. Fix: '
      f'{fix_command(name, data_dir)}\n(tfds said: {str(e).splitlines()[0][:300]})'
    ) from e


DOWNLOADABLE = ('cifar10', 'cifar100', 'svhn_cropped', 'mnist')
# Where tfds downloads each of them from (tensorflow_datasets/image_classification/*.py).
DOWNLOAD_HOSTS = {
  'cifar10': 'www.cs.toronto.edu',
  'cifar100': 'www.cs.toronto.edu',
  'svhn_cropped': 'ufldl.stanford.edu',
  'mnist': 'storage.googleapis.com',
}
RESOLVE_TIMEOUT_S = 5.0
_PROXY_VARIABLES = (
  'https_proxy',
  'HTTPS_PROXY',
  'http_proxy',
  'HTTP_PROXY',
  'all_proxy',
  'ALL_PROXY',
)


def host_resolves(host: str, timeout: float = RESOLVE_TIMEOUT_S) -> bool:
  """Whether a DNS look-up of `host` succeeds within `timeout` seconds.

  `socket.getaddrinfo` has no timeout of its own, so it runs in a daemon thread that is
  abandoned when the time is up (an offline machine usually fails at once).
  """
  resolved: list[bool] = []

  def look_up() -> None:
    try:
      resolved.append(bool(socket.getaddrinfo(host, 443)))
    except (OSError, UnicodeError):
      resolved.append(False)

  thread = threading.Thread(target=look_up, name=f'resolve {host}', daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(resolved and resolved[0])


def _unreachable_reason(name: str) -> str | None:
  """Why `name` cannot be downloaded from here, found in seconds; None if it may be.

  tfds retries a failed look-up with back-off for minutes before it gives up; a host that
  does not resolve fails here at once. Behind a proxy (https_proxy, ...) the proxy resolves
  the host, so nothing is checked.
  """
  host = DOWNLOAD_HOSTS.get(name)
  if host is None or any(os.environ.get(v) for v in _PROXY_VARIABLES):
    return None
  if host_resolves(host):
    return None
  return f'cannot resolve {host}, where tfds downloads it from: this machine is offline'


def download_and_prepare(name: str, data_dir: str | None, manual_dir: str | None = None):
  """tfds download_and_prepare as array_record (needs the network, or manual_dir)."""
  import sys  # pylint: disable=import-outside-toplevel

  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    import importlib_resources  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:  # tfds 4.9.10 looks up this optional backport; the stdlib one works
    import importlib.resources  # pylint: disable=import-outside-toplevel

    sys.modules['importlib_resources'] = importlib.resources
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  tfds.builder(get_spec(name).tfds_name, data_dir=data_dir).download_and_prepare(
    download_config=config, file_format='array_record'
  )


def _download_failed(name: str, data_dir: str | None, reason: str) -> str:
  return (
    f'Dataset {name!r} is not in data_dir {resolve_data_dir(data_dir)!r} and '
    f'downloading it failed ({reason}). Fix: {fix_command(name, data_dir)}'
  )


def ensure_available(name: str, data_dir: str | None, download: bool) -> None:
  """Raises DatasetNotFoundError unless `name` can be opened; with `download`, a missing
  public dataset (DOWNLOADABLE) is first downloaded and prepared, as flax's examples do."""
  try:
    open_source(name, 'train', data_dir)
    return
  except DatasetNotFoundError:
    if not download or name not in DOWNLOADABLE:
      raise
  reason = _unreachable_reason(name)
  if reason is not None:
    raise DatasetNotFoundError(_download_failed(name, data_dir, reason))
  try:
    download_and_prepare(name, data_dir)
  except Exception as e:  # pylint: disable=broad-except  (offline: any network error)
    reason = f'{type(e).__name__}: {(str(e).splitlines() or [""])[0][:200]}'
    raise DatasetNotFoundError(_download_failed(name, data_dir, reason)) from e
  open_source(name, 'train', data_dir)


def tfds_data_source(name: str, split: str, data_dir: str | None):
  """Plain `tfds.data_source` of any (e.g. generically imported) dataset, never downloading."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


def imagenet100_wnids() -> list[str]:
  path = Path(__file__).with_name('imagenet100_classes.txt')
  lines = [l.strip() for l in path.read_text().splitlines()]
  return sorted(l for l in lines if l and not l.startswith('#'))


_IMAGENET100_CACHE: dict[tuple, np.ndarray] = {}


def imagenet100_indices(tfds_split: str, data_dir: str | None, base) -> tuple[np.ndarray, dict]:
  """Indices of the imagenet2012 records in the CMC 100 classes + label map to 0..99.

  The labels are scanned once (images not decoded) and cached in memory and, when possible,
  in `<data_dir>/imagenet100_index/<split>.npy` (`tools/import_data imagenet100` does it)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  info = builder.info
  tfds_labels = [info.features['label'].str2int(w) for w in imagenet100_wnids()]
  label_map = {t: i for i, t in enumerate(tfds_labels)}
  key = (resolve_data_dir(data_dir), tfds_split, len(base))
  if key not in _IMAGENET100_CACHE:
    cache = Path(key[0]) / 'imagenet100_index' / f'{tfds_split}_{len(base)}.npy'
    if cache.exists():
      _IMAGENET100_CACHE[key] = np.load(cache)
    else:
      src = _tfds_source(
        'imagenet100', tfds_split, data_dir, decoders={'image': tfds.decode.SkipDecoding()}
      )
      wanted = np.zeros(1000, bool)
      wanted[tfds_labels] = True
      keep = []
      for start in range(0, len(src), 4096):
        idx = list(range(start, min(len(src), start + 4096)))
        labels = np.array([int(src[i]['label']) for i in idx])
        keep.append(np.asarray(idx)[wanted[labels]])
      _IMAGENET100_CACHE[key] = np.concatenate(keep) if keep else np.zeros(0, np.int64)
      try:  # only next to real imagenet2012 files (never for tfds mocks)
        if Path(builder.data_dir).is_dir():
          cache.parent.mkdir(parents=True, exist_ok=True)
          np.save(cache, _IMAGENET100_CACHE[key])
      except OSError:
        pass
  return _IMAGENET100_CACHE[key], label_map


def holds_in_memory(name: str) -> bool:
  """Whether `open_source(..., in_memory=True)` decodes `name` into memory: every dataset
  of fixed-size images (all but ImageNet, whose train split is ~140 GB decoded)."""
  spec = get_spec(name)
  return spec.kind != 'memory' and not spec.variable_size


def open_source(
  name: str, split: str, data_dir: str | None, *, in_memory: bool = False, decode: bool = True
):
  """Random-access source of {'image', 'label'} records of `name`/`split` ('train'/'test').

  With `in_memory`, datasets of fixed-size images are decoded once (per process) into a
  uint8 array (`rankdeficit.data.memory`); the records are the same. With `decode=False`
  a variable-size (ImageNet) source returns the encoded image bytes (tfds SkipDecoding),
  for `augment.TrainTransform` to decode only what its random crop needs.
  """
  spec = get_spec(name)
  splits = dict(spec.splits)
  if split not in splits:
    raise ValueError(f'Unknown split {split!r} for {name}; valid: {", ".join(splits)}.')
  if spec.kind == 'memory':
    return DigitsSource(splits[split])
  if in_memory and holds_in_memory(name):
    return memory.in_memory_source(
      name, split, resolve_data_dir(data_dir), lambda: _tfds_source(name, splits[split], data_dir)
    )
  decoders = None
  if not decode and spec.variable_size:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    decoders = {'image': tfds.decode.SkipDecoding()}
  base = _tfds_source(name, splits[split], data_dir, decoders)
  if name == 'imagenet100':
    indices, label_map = imagenet100_indices(splits[split], data_dir, base)
    return IndexedSource(base, indices, label_map)
  return base
