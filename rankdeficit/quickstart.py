"""Quickstart: the same small model at T=1 and T=100, side by side, offline, in minutes.

  python -m rankdeficit.quickstart                # digits (bundled with scikit-learn)
  python -m rankdeficit.quickstart --dataset=cifar10_jpeg --data_dir=data/tfds

With `--dataset=auto` (the default) it uses CIFAR-10 when a prepared copy is found in the
tfds data_dir (`cifar10`, or `cifar10_jpeg` from `python -m tools.import_data`), and
otherwise the 1,797 UCI handwritten digits that ship inside scikit-learn, so it runs on a
fresh machine with no data and no network. It prints accuracy, the logits norm at
initialisation and at the end, the solution rank (rank of the logits over the whole test
set), the post-softmax rank and the numerical rank of every layer's representation.
"""

import importlib.util
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from rankdeficit import models
from rankdeficit.analysis import extraction
from rankdeficit.data import input_pipeline
from rankdeficit.metrics import tsqr
from rankdeficit.run import runtime
from rankdeficit.training import steps
from rankdeficit.training import train

FLAGS = flags.FLAGS


def _define_flags():
  """CLI flags, defined only when run as a script: importing this module (its functions
  are reused by tests) must not claim names such as --workdir that rankdeficit.main defines."""
  flags.DEFINE_string('dataset', 'auto', 'auto | digits | cifar10 | cifar10_jpeg')
  flags.DEFINE_string(
    'data_dir', os.environ.get('TFDS_DATA_DIR', 'data/tfds'), 'tfds data_dir searched for CIFAR-10.'
  )
  flags.DEFINE_string('workdir', 'runs/quickstart', 'Runs go to <workdir>/T<temperature>.')
  flags.DEFINE_list('temperatures', ['1', '100'], 'Temperatures to compare.')
  flags.DEFINE_integer('epochs', None, 'Override the number of epochs.')


def pick_dataset(requested: str, data_dir: str) -> str:
  """`auto`: the first of cifar10, cifar10_jpeg that is prepared in data_dir, else digits."""
  if requested != 'auto':
    return requested
  for name in ('cifar10', 'cifar10_jpeg'):
    try:
      input_pipeline.dataset_info(name, data_dir)
      return name
    except input_pipeline.DatasetNotFoundError:
      continue
  return 'digits'


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _checkout_config(name: str):
  """`configs/<name>.py` of the repository checkout, loaded by path as main.py's
  `--config` does (the installed package holds no `configs`)."""
  path = REPO_ROOT / 'configs' / f'{name}.py'
  if not path.exists():
    raise FileNotFoundError(
      f'{path} not found: run the quickstart from a checkout of '
      'the repository (configs/ is not installed with the package).'
    )
  if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the config file imports `configs.base`
  spec = importlib.util.spec_from_file_location(f'_rankdeficit_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def quickstart_config_for(dataset: str, data_dir: str, temperature: float, epochs=None):
  c = _checkout_config('quickstart')
  c.temperature = temperature
  if dataset != 'digits':
    # 32x32 colour images: more data, fewer epochs, same small MLP.
    c.dataset, c.data_dir, c.image_size = dataset, data_dir, 32
    c.train_subset, c.num_epochs, c.batch_size = 5000, 8, 128
    c.eval_batch_size = c.metrics_batch_size = 500
  if epochs:
    c.num_epochs = epochs
  return c


def representation_ranks(config, state, model) -> dict[str, float]:
  """Numerical rank and effective rank of each layer's representation over the test split."""
  features = extraction.extract_features(
    model,
    steps.model_variables(state),
    input_pipeline.create_eval_iterator(
      config, config.dataset, 'test', batch_size=config.eval_batch_size
    ),
    max_dims=config.max_feature_dims,
  )
  ranks = {}
  for name, matrix in {**features.reps, 'logits': features.logits}.items():
    # One TSQR gives both; the padding rows of the last batch are masked out.
    spectrum = tsqr.streamed_spectrum(matrix, features.mask)
    ranks[f'rank/{name}'] = int(spectrum['numerical_rank'])
    ranks[f'erank/{name}'] = float(spectrum['effective_rank'])
  return ranks


def main(argv):
  del argv
  runtime.set_xla_cpu_flags()  # before anything starts JAX's backends
  dataset = pick_dataset(FLAGS.dataset, FLAGS.data_dir)
  temperatures = [float(t) for t in FLAGS.temperatures]
  rows = {}
  for t in temperatures:
    config = quickstart_config_for(dataset, FLAGS.data_dir, t, FLAGS.epochs)
    workdir = os.path.join(FLAGS.workdir, f'{dataset}_T{t:g}')
    print(f'training {config.model.name} on {dataset} at T={t:g} -> {workdir}', flush=True)
    state, results = train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    model = models.create_model(
      config.model, input_pipeline.dataset_info(config.dataset, config.data_dir).num_classes
    )
    rows[t] = {**results, **representation_ranks(config, state, model)}
  print_table(dataset, rows)


def print_table(dataset: str, rows: dict) -> None:
  temps = list(rows)
  first = rows[temps[0]]
  keys = [
    'eval/accuracy',
    'eval/loss',
    'init/logits_norm',
    'eval/logits_norm',
    'eval/solution_rank',
    'eval/post_softmax_rank',
  ]
  keys = (
    [k for k in keys if k in first]
    + [k for k in first if k.startswith('rank/')]
    + [k for k in first if k.startswith('erank/')]
  )
  print(f'\n{dataset}: same model, same data, different softmax temperature\n')
  header = f'| {"metric":<26} |' + ''.join(f' {"T=" + format(t, "g"):>10} |' for t in temps)
  print(header)
  print('|' + '-' * 28 + '|' + '------------|' * len(temps))
  for k in keys:
    cells = ''.join(f' {_fmt(rows[t].get(k)):>10} |' for t in temps)
    print(f'| {k:<26} |{cells}')
  print(
    "\nrank/<layer>: numerical rank of that layer's representation on the test set "
    '(PyTorch matrix_rank tolerance); erank/<layer>: its effective rank (entropy of the '
    'normalised singular values).'
  )


def _fmt(v) -> str:
  if v is None:
    return '-'
  if isinstance(v, float) and not float(v).is_integer():
    return f'{v:.4g}'
  return str(int(v))


if __name__ == '__main__':
  _define_flags()
  logging.set_verbosity(logging.WARNING)
  app.run(main)
