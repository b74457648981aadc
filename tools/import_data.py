r"""Puts a dataset into a tfds data_dir (array_record) so the input pipeline can read it.

Offline (no network; reads ../shared/data or --source):
  python -m tools.import_data cifar10_jpeg --data_dir=DIR       # 50,000 + 10,000 JPEG CIFAR-10
  python -m tools.import_data tiny_imagenet32 --data_dir=DIR    # 20,000 + 10,000, 200 classes
  python -m tools.import_data mnist --data_dir=DIR              # exact MNIST as tfds 'mnist'
  python -m tools.import_data all --data_dir=DIR                # the three above
  options: --source=/path/to/shared/data  --limit_train=N --limit_test=N  --overwrite

Generic (your own files; any new name; .npz with arrays `image` uint8 [N,H,W,C] and `label`,
or an image folder / zip of one with class subfolders):
  python -m tools.import_data my_set --data_dir=DIR --train=train.npz --test=test_dir_or.zip

Connected machine (tfds downloads and prepares as array_record):
  python -m tools.import_data cifar10 --data_dir=DIR --download     # also cifar100, svhn_cropped
  python -m tools.import_data imagenet2012 --data_dir=DIR --manual_dir=DIR_WITH_ILSVRC_TARS
  python -m tools.import_data imagenet100 --data_dir=DIR   # index of the CMC classes (needs
                                                           # imagenet2012 prepared first)
`digits` needs no import (scikit-learn's copy, in memory).
"""

import argparse
import sys
import time


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    'name',
    help='cifar10_jpeg | tiny_imagenet32 | mnist | all | '
    'cifar10 | cifar100 | svhn_cropped | imagenet2012 | imagenet100 | '
    'a new name for --train/--test files',
  )
  parser.add_argument('--data_dir', required=True, help='tfds data_dir to write into')
  parser.add_argument(
    '--source',
    default=None,
    help='folder with the shared data files (default ../shared/data or $RANKDEFICIT_SHARED_DATA)',
  )
  parser.add_argument(
    '--limit_train', type=int, default=0, help='keep N train examples, evenly spaced (0 = all)'
  )
  parser.add_argument('--limit_test', type=int, default=0)
  parser.add_argument('--overwrite', action='store_true')
  parser.add_argument('--train', default=None, help='generic: .npz, image folder or zip')
  parser.add_argument('--test', default=None, help='generic: .npz, image folder or zip')
  parser.add_argument('--num_classes', type=int, default=None, help='generic .npz: label range')
  parser.add_argument(
    '--download', action='store_true', help='tfds download_and_prepare (connected machine)'
  )
  parser.add_argument('--manual_dir', default=None, help='imagenet2012: folder of the tars')
  return parser


def _import_one(name: str, args, parser: argparse.ArgumentParser) -> str:
  """Imports dataset `name` as `args` say; returns where it was written."""
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import local_import  # pylint: disable=import-outside-toplevel

  if args.train or args.test:
    inputs = {s: p for s, p in (('train', args.train), ('test', args.test)) if p}
    return local_import.import_generic(
      name,
      args.data_dir,
      inputs,
      num_classes=args.num_classes,
      limits={'train': args.limit_train, 'test': args.limit_test},
      overwrite=args.overwrite,
    )
  if name in local_import.IMPORTERS and not args.download:
    return local_import.IMPORTERS[name](
      args.data_dir,
      source=args.source,
      limit_train=args.limit_train,
      limit_test=args.limit_test,
      overwrite=args.overwrite,
    )
  if name == 'imagenet100':
    for split in ('train', 'validation'):
      base = datasets._tfds_source('imagenet100', split, args.data_dir)  # pylint: disable=protected-access
      indices, _ = datasets.imagenet100_indices(split, args.data_dir, base)
      print(f'imagenet100 {split}: {len(indices)} examples')
    return f'{args.data_dir}/imagenet100_index'
  if name in datasets.SPECS and (
    args.download or datasets.SPECS[name].kind in ('download', 'manual')
  ):
    datasets.download_and_prepare(name, args.data_dir, args.manual_dir)
    return f'{args.data_dir}/{name}'
  parser.error(f'{name!r}: not an importable name; pass --train/--test files for a new dataset.')


def _summary(name: str, data_dir: str) -> str:
  """' (N train / M test, C classes)' for a known dataset, '' for a generic one."""
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  if name not in datasets.SPECS:
    return ''
  info = input_pipeline.dataset_info(name, data_dir)
  return f' ({info.num_train} train / {info.num_test} test, {info.num_classes} classes)'


def main(argv=None) -> int:
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import local_import  # pylint: disable=import-outside-toplevel

  parser = _parser()
  args = parser.parse_args(argv)
  start = time.time()
  names = local_import.OFFLINE_NAMES if args.name == 'all' else (args.name,)
  try:
    for name in names:
      path = _import_one(name, args, parser)
      print(f'{name}: written to {path}{_summary(name, args.data_dir)}')
  except (local_import.DataImportError, FileNotFoundError, datasets.DatasetNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'done in {time.time() - start:.1f}s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
