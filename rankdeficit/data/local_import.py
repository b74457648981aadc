"""Turns local image data (../shared/data, image folders, zips, .npz arrays) into tfds datasets.

Each import writes a regular tfds dataset (array_record files + dataset_info.json +
features.json, examples in source order: shuffling disabled) into `data_dir/<name>/<version>`,
so the training/eval pipeline reads it with `tfds.data_source(name, data_dir=...)` exactly
like a downloaded tfds dataset. Features: {'image': tfds Image (PNG, lossless), 'label':
ClassLabel}. `mnist` is written under tfds' own name and version with tfds' own features, so
`tfds.data_source('mnist', data_dir=...)` reads it as if tfds had downloaded it.

`limit`: keep that many examples evenly spaced through the split (class-balanced for the
class-sorted splits), in source order; 0/None = everything.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
import shutil
from typing import Callable, Iterable, Iterator
import zipfile

import numpy as np
from PIL import Image

CIFAR10_CLASSES = (
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
)
OFFLINE_NAMES = ('cifar10_jpeg', 'tiny_imagenet32', 'mnist')
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


class DataImportError(ValueError):
  """Corrupt or mismatched input; the message names the offending file."""


def default_source_dir() -> Path:
  """../shared/data relative to the repo root, or $RANKDEFICIT_SHARED_DATA."""
  env = os.environ.get('RANKDEFICIT_SHARED_DATA')
  return Path(env) if env else Path(__file__).resolve().parents[3] / 'shared' / 'data'


def _select(n: int, limit: int | None) -> np.ndarray:
  if not limit or limit >= n:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _builder_cls():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core.dataset_builders import adhoc_builder  # pylint: disable=import-outside-toplevel

  class _LocalBuilder(adhoc_builder.AdhocBuilder, skip_registration=True):
    # tfds 4.9.10 resolves code_path through the optional `importlib_resources` package;
    # a locally built dataset has no code (checksums/urls), so skip that lookup.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # pylint: disable=invalid-overridden-method
      return None

  return _LocalBuilder


FINGERPRINT_FILE = 'rankdeficit_import.json'


def fingerprint(inputs: Iterable, **limits) -> dict:
  """What an import was made from: each input file's path, size and mtime, and the limits."""
  files = []
  for path in inputs:
    path = Path(path)
    stat = path.stat() if path.exists() else None
    files.append(
      [str(path.resolve()), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]
    )
  return {'inputs': files, 'limits': {k: v or 0 for k, v in sorted(limits.items())}}


def _reuse_existing(out: Path, wanted: dict | None) -> bool:
  """True if `out` already holds this import; raises if it holds a different one."""
  stored = out / FINGERPRINT_FILE
  if wanted is None or not stored.exists():
    return True  # imported before fingerprints were recorded: cannot tell, keep it
  have = json.loads(stored.read_text())
  if have == json.loads(json.dumps(wanted)):
    return True
  what = [k for k in ('inputs', 'limits') if have.get(k) != wanted.get(k)]
  raise DataImportError(
    f'{out} was imported from different {" and ".join(what)} '
    f'({have.get(what[0])} != {wanted.get(what[0])}); pass --overwrite to '
    f'replace it.'
  )


def write_tfds_dataset(
  name: str,
  data_dir: str,
  splits: dict[str, Iterable[dict]],
  *,
  image_shape,
  class_names=None,
  num_classes=None,
  version='1.0.0',
  description='',
  overwrite=False,
  source: dict | None = None,
  encoding_format='png',
) -> Path:
  """Writes {'image': uint8 HWC, 'label': int} examples as an array_record tfds dataset.

  An 'image' given as bytes is stored as is (already encoded in `encoding_format`).
  `source` (see `fingerprint`) is recorded next to the data; an existing import of other
  inputs or limits is refused unless `overwrite`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  out = Path(data_dir) / name / str(version)
  tfds.disable_progress_bar()
  if out.exists():
    if not overwrite and (out / 'dataset_info.json').exists() and _reuse_existing(out, source):
      return out
    shutil.rmtree(out)
  label = (
    tfds.features.ClassLabel(names=list(class_names))
    if class_names is not None
    else tfds.features.ClassLabel(num_classes=num_classes)
  )
  features = tfds.features.FeaturesDict(
    {
      'image': tfds.features.Image(shape=tuple(image_shape), encoding_format=encoding_format),
      'label': label,
    }
  )
  builder = _builder_cls()(
    name=name,
    version=version,
    features=features,
    data_dir=data_dir,
    split_datasets={s: _keyed_pil(it) for s, it in splits.items()},
    description=description or f'{name}, imported by rankdeficit.data.local_import.',
    file_format='array_record',
    disable_shuffling=True,
  )
  builder.download_and_prepare()
  if source is not None:
    (out / FINGERPRINT_FILE).write_text(json.dumps(source))
  return out


def _keyed_pil(examples: Iterable[dict]) -> Iterator[tuple[int, dict]]:
  # PIL images are PNG-encoded by Pillow (~20x faster than tfds' TensorFlow encoder).
  for i, ex in enumerate(examples):
    image = ex['image']
    if isinstance(image, bytes):
      yield i, ex
      continue
    yield i, dict(ex, image=Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image))


# ------------------------------------------------------------------ validation / readers
def validate_arrays(images, labels, path, num_classes: int | None = None):
  """Checks an (images, labels) pair; returns uint8 [N,H,W,C] images and int64 labels."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise DataImportError(
      f'{path}: images must be uint8 [N, H, W, C] with C in (1, 3), got '
      f'dtype {images.dtype} shape {images.shape}.'
    )
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataImportError(
      f'{path}: labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}.'
    )
  if len(labels) != len(images) or len(images) == 0:
    raise DataImportError(f'{path}: {len(images)} images but {len(labels)} labels.')
  top = num_classes if num_classes is not None else np.iinfo(np.int64).max
  if labels.min() < 0 or labels.max() >= top:
    raise DataImportError(
      f'{path}: labels must lie in [0, {num_classes}), found [{labels.min()}, {labels.max()}].'
    )
  return images, labels.astype(np.int64)


def read_npz(path, num_classes: int | None = None, image_key='image', label_key='label'):
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = {image_key, label_key} - set(data.files)
      if missing:
        raise DataImportError(f'{path}: missing arrays {sorted(missing)}; has {data.files}.')
      return validate_arrays(data[image_key], data[label_key], path, num_classes)
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataImportError(f'{path}: not a readable .npz file ({e}).') from e
  except ValueError as e:  # e.g. object arrays, refused with allow_pickle=False
    if isinstance(e, DataImportError):
      raise
    raise DataImportError(
      f'{path}: cannot be read without unpickling ({e}); save plain uint8/int arrays.'
    ) from e


def _decode(data: bytes, where) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as im:
      im = im.convert('L') if im.mode in ('L', '1', 'I;16') else im.convert('RGB')
      array = np.asarray(im)
  except Exception as e:  # pylint: disable=broad-except
    raise DataImportError(f'{where}: cannot decode image ({e}).') from e
  return array[..., None] if array.ndim == 2 else array


class _Folder:
  """Class-subfolder layout (`root/<class>/<file>`) in a directory or a zip file."""

  def __init__(self, path, inner: str = ''):
    self.path = Path(path)
    if zipfile.is_zipfile(self.path):
      self._zip = zipfile.ZipFile(self.path)
      names = [n for n in self._zip.namelist() if not n.endswith('/')]
    elif self.path.is_dir():
      self._zip = None
      names = [str(p.relative_to(self.path)) for p in self.path.rglob('*') if p.is_file()]
    else:
      raise DataImportError(f'{self.path}: neither a directory nor a zip file.')
    prefix = inner.strip('/') + '/' if inner else ''
    if not inner and self._zip is not None:  # a zip of one top-level folder
      tops = {n.split('/')[0] for n in names}
      if len(tops) == 1 and all(n.count('/') >= 2 for n in names):
        prefix = tops.pop() + '/'
    files = [
      n
      for n in names
      if n.startswith(prefix)
      and n.lower().endswith(IMAGE_SUFFIXES)
      and n[len(prefix) :].count('/') == 1
    ]
    if not files:
      raise DataImportError(
        f'{self.path}: no images in <class>/<file> layout under {prefix or "the top level"!r}.'
      )
    self.prefix = prefix
    self.classes = sorted({f[len(prefix) :].split('/')[0] for f in files})
    index = {c: i for i, c in enumerate(self.classes)}
    self.files = sorted(files, key=lambda f: (index[f[len(prefix) :].split('/')[0]], f))

  def read(self, name: str) -> bytes:
    try:
      return self._zip.read(name) if self._zip else (self.path / name).read_bytes()
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # e.g. a bad CRC-32
      raise DataImportError(f'{self.path}:{name}: cannot be read ({e}).') from e

  def label(self, name: str) -> int:
    return self.classes.index(name[len(self.prefix) :].split('/')[0])


def _folder_examples(folder: _Folder, files: list[str], shape, classes) -> Iterator[dict]:
  for f in files:
    image = _decode(folder.read(f), f'{folder.path}:{f}')
    if shape is not None and image.shape != tuple(shape):
      raise DataImportError(f'{folder.path}:{f}: image shape {image.shape}, expected {shape}.')
    yield {'image': image, 'label': classes.index(f[len(folder.prefix) :].split('/')[0])}


def _array_examples(images, labels, keep) -> Iterator[dict]:
  for i in keep:
    yield {'image': images[i], 'label': int(labels[i])}


# ------------------------------------------------------------------ named importers
def import_cifar10_jpeg(
  data_dir, source=None, limit_train=None, limit_test=None, overwrite=False
) -> Path:
  """All 60,000 JPEG CIFAR-10 images of cifar10_jpeg.zip, decoded with Pillow. Train in the
  canonical CIFAR-10 order (train_canonical_order.txt), test in class-major folder order."""
  path = Path(source or default_source_dir()) / 'cifar10_jpeg.zip'
  if not path.exists():
    raise FileNotFoundError(f'{path} not found (pass --source=DIR holding cifar10_jpeg.zip).')
  train = _Folder(path, 'cifar10/train')
  test = _Folder(path, 'cifar10/test')
  for f in (train, test):
    if tuple(f.classes) != CIFAR10_CLASSES:
      raise DataImportError(f'{path}: class folders {f.classes} != {CIFAR10_CLASSES}.')
  order = train.read('cifar10/train_canonical_order.txt').decode().split()
  order = ['cifar10/' + o for o in order]
  if sorted(order) != sorted(train.files):
    raise DataImportError(f'{path}: train_canonical_order.txt does not list the train files.')
  train_files = [order[i] for i in _select(len(order), limit_train)]
  test_files = [test.files[i] for i in _select(len(test.files), limit_test)]
  return write_tfds_dataset(
    'cifar10_jpeg',
    data_dir,
    {
      'train': _folder_examples(train, train_files, (32, 32, 3), train.classes),
      'test': _folder_examples(test, test_files, (32, 32, 3), test.classes),
    },
    image_shape=(32, 32, 3),
    class_names=CIFAR10_CLASSES,
    overwrite=overwrite,
    source=fingerprint([path], train=limit_train, test=limit_test),
    description='CIFAR-10 from the JPEG copy in ../shared/data/cifar10_jpeg.zip (quality ~75).',
  )


def import_tiny_imagenet32(
  data_dir, source=None, limit_train=None, limit_test=None, overwrite=False
) -> Path:
  """Tiny-ImageNet-200 at 32x32: 'train' = 20,000 (100/class), 'test' = the 10,000 val."""
  src = Path(source or default_source_dir())
  splits, names = {}, None
  for split, fname, limit in (
    ('train', 'tinyimagenet200_train100_32x32.npz', limit_train),
    ('test', 'tinyimagenet200_val_32x32.npz', limit_test),
  ):
    images, labels = read_npz(src / fname, num_classes=200)
    if images.shape[1:] != (32, 32, 3):
      raise DataImportError(f'{src / fname}: image shape {images.shape[1:]}, expected 32x32x3.')
    with np.load(src / fname, allow_pickle=False) as data:
      names = [str(w) for w in data['class_wnid']] if 'class_wnid' in data.files else names
    splits[split] = _array_examples(images, labels, _select(len(labels), limit))
  return write_tfds_dataset(
    'tiny_imagenet32',
    data_dir,
    splits,
    image_shape=(32, 32, 3),
    class_names=names,
    num_classes=200,
    overwrite=overwrite,
    source=fingerprint(
      [src / 'tinyimagenet200_train100_32x32.npz', src / 'tinyimagenet200_val_32x32.npz'],
      train=limit_train,
      test=limit_test,
    ),
    description='Tiny-ImageNet-200 box-downsampled to 32x32.',
  )


def import_mnist(data_dir, source=None, limit_train=None, limit_test=None, overwrite=False) -> Path:
  """Exact MNIST from mnist_{train,test}.npz, written as tfds' own `mnist` dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  src = Path(source or default_source_dir())
  splits = {}
  for split, limit in (('train', limit_train), ('test', limit_test)):
    images, labels = read_npz(src / f'mnist_{split}.npz', num_classes=10)
    if images.shape[1:] != (28, 28, 1):
      raise DataImportError(f'{src}/mnist_{split}.npz: shape {images.shape[1:]} != 28x28x1.')
    splits[split] = _array_examples(images, labels, _select(len(labels), limit))
  version = str(tfds.builder_cls('mnist').VERSION)
  return write_tfds_dataset(
    'mnist',
    data_dir,
    splits,
    image_shape=(28, 28, 1),
    num_classes=10,
    version=version,
    overwrite=overwrite,
    source=fingerprint(
      [src / f'mnist_{s}.npz' for s in splits], train=limit_train, test=limit_test
    ),
    description='MNIST imported from ../shared/data (exact pixels).',
  )


def import_generic(
  name, data_dir, inputs: dict[str, str], num_classes=None, limits=None, overwrite=False
) -> Path:
  """Any dataset from per-split inputs: an .npz (arrays `image`, `label`), an image folder
  or a zip of one (`<class>/<file>`, classes = sorted folder names). All splits must agree
  on image shape (and on the class folders)."""
  from rankdeficit.data.datasets import SPECS  # pylint: disable=import-outside-toplevel

  if name in SPECS:
    raise DataImportError(
      f'{name!r} is a built-in dataset name; give your --train/--test files another name.'
    )
  limits = limits or {}
  splits, shape, classes = {}, None, None
  for split, path in inputs.items():
    path = Path(path)
    if path.suffix == '.npz':
      images, labels = read_npz(path, num_classes)
      if shape is not None and images.shape[1:] != shape:
        raise DataImportError(
          f'{path}: image shape {images.shape[1:]} != {shape} of the other splits.'
        )
      shape = images.shape[1:]
      num_classes = num_classes or int(labels.max()) + 1
      splits[split] = _array_examples(images, labels, _select(len(labels), limits.get(split)))
    else:
      folder = _Folder(path)
      if classes is not None and folder.classes != classes:
        raise DataImportError(f'{path}: class folders {folder.classes} != {classes}.')
      classes = folder.classes
      first = _decode(folder.read(folder.files[0]), f'{path}:{folder.files[0]}')
      shape = shape or first.shape
      files = [folder.files[i] for i in _select(len(folder.files), limits.get(split))]
      splits[split] = _folder_examples(folder, files, shape, classes)
  return write_tfds_dataset(
    name,
    data_dir,
    splits,
    image_shape=shape,
    class_names=classes,
    num_classes=None if classes else num_classes,
    overwrite=overwrite,
    source=fingerprint(inputs.values(), num_classes=num_classes, **limits),
  )


IMPORTERS: dict[str, Callable[..., Path]] = {
  'cifar10_jpeg': import_cifar10_jpeg,
  'tiny_imagenet32': import_tiny_imagenet32,
  'mnist': import_mnist,
}
