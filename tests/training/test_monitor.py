"""Train-time monitor on tiny Flax models following the models contract."""

import json
import os
import subprocess
import sys
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rankdeficit import metrics
from rankdeficit.training import monitor


class TinyCNN(nn.Module):
  num_classes: int = 5

  @nn.compact
  def __call__(self, x, train: bool = False):
    reps = {}
    x = nn.relu(nn.Conv(6, (3, 3), name='conv1')(x))
    reps['conv1'] = x
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(nn.Conv(8, (3, 3), strides=2, padding='VALID', name='conv2')(x))
    reps['conv2'] = x
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(16, name='fc')(x))
    reps['fc'] = x
    return nn.Dense(self.num_classes, name='head')(x), reps


def ce_loss(logits, labels, temperature):
  return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, labels).mean()


class RecordingWriter:
  def __init__(self):
    self.scalars, self.hists, self.images = {}, {}, {}

  def write_scalars(self, step, scalars):
    self.scalars.update(scalars)

  def write_histograms(self, step, arrays, num_buckets=None):
    self.hists.update(arrays)

  def write_images(self, step, images):
    self.images.update(images)


def test_collapse_metrics_on_tiny_cnn():
  model = TinyCNN()
  images = jax.random.normal(jax.random.PRNGKey(0), (12, 8, 8, 3))
  labels = jnp.arange(12) % 5
  variables = model.init(jax.random.PRNGKey(1), images, train=False)
  fn = monitor.make_collapse_metrics_fn(model, ce_loss, max_dims=50, top_k=4, max_alignment_rows=64)
  out = fn(variables, images, labels, 2.0, jax.random.PRNGKey(2))
  out = jax.device_get(out)
  paths = ['conv1', 'conv2', 'fc', 'head']
  for p in paths:
    assert f'rank/grad/{p}' in out and f'alignment/{p}' in out, p
    assert out[f'alignment/{p}'].shape == (4, 4)
    assert 0.0 <= out[f'alignment_max/{p}'] <= 1.0 + 1e-5
  for name in ['conv1', 'conv2', 'fc']:
    assert out[f'sv/rep/{name}'].shape == (4,)
    assert 1 <= out[f'rank/rep/{name}'] <= 12
  # independent reference for a few entries
  logits, reps = model.apply(variables, images, train=False)
  assert int(out['rank/pre_softmax']) == int(metrics.numerical_rank(logits))
  assert int(out['rank/post_softmax']) == int(metrics.softmax_rank(logits, 2.0))
  np.testing.assert_allclose(out['logits_norm'], np.linalg.norm(np.asarray(logits)), rtol=1e-5)
  np.testing.assert_allclose(float(out['loss']), float(ce_loss(logits, labels, 2.0)), rtol=1e-5)
  grads = jax.grad(
    lambda p: ce_loss(model.apply({**variables, 'params': p}, images)[0], labels, 2.0)
  )(variables['params'])
  assert int(out['rank/grad/head']) == int(metrics.gradient_rank(grads['head']['kernel']))
  fc_in = np.asarray(reps['conv2']).reshape(12, -1)
  w = metrics.kernel_as_matrix(variables['params']['fc']['kernel'])
  np.testing.assert_allclose(
    out['alignment/fc'], np.asarray(metrics.singular_vector_alignment(w, fc_in, 4)), atol=1e-4
  )
  np.testing.assert_allclose(
    out['alignment_max_mean'], np.mean([out[f'alignment_max/{p}'] for p in paths]), rtol=1e-6
  )

  writer = RecordingWriter()
  monitor.write_collapse_metrics(writer, 0, out)
  assert 'monitor/rank/pre_softmax' in writer.scalars
  assert 'monitor/sv/rep/fc/sigma_1' in writer.scalars
  assert writer.hists['monitor/sv/logits'].shape == (4,)
  img = writer.images['monitor/alignment/conv1']
  assert img.shape == (1, 4, 4, 1) and img.min() >= 0.0 and img.max() <= 1.0


class TinyMLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    reps = {}
    for i in range(2):
      x = nn.relu(nn.Dense(10)(x))
      reps[f'layer{i}'] = x
    return nn.Dense(3)(x), reps


def test_collapse_metrics_with_clu_writer(tmp_path):
  from clu import metric_writers

  model = TinyMLP()
  x = jax.random.normal(jax.random.PRNGKey(0), (20, 4, 4, 1))
  y = jnp.arange(20) % 3
  variables = model.init(jax.random.PRNGKey(1), x)
  out = jax.jit(
    monitor.collapse_metrics,
    static_argnames=('model', 'loss_fn', 'max_dims', 'top_k', 'max_alignment_rows', 'input_ranks'),
  )(
    model,
    variables,
    x,
    y,
    temperature=1.0,
    loss_fn=ce_loss,
    key=jax.random.PRNGKey(0),
    top_k=3,
    input_ranks=True,
  )
  assert {'rank/grad/Dense_0', 'rank/grad/Dense_1', 'rank/grad/Dense_2'} <= set(out)
  # input of the first Dense is the flattened 16-d image: rank <= 16
  assert int(out['rank/input/Dense_0']) == int(metrics.numerical_rank(x.reshape(20, -1)))
  # the other inputs ARE the representations: their spectrum is reused, same value
  _, reps = model.apply(variables, x)
  assert (
    int(out['rank/input/Dense_1'])
    == int(out['rank/rep/layer0'])
    == int(metrics.numerical_rank(reps['layer0']))
  )
  assert (
    int(out['rank/input/Dense_2'])
    == int(out['rank/rep/layer1'])
    == int(metrics.numerical_rank(reps['layer1']))
  )
  writer = metric_writers.create_default_writer(str(tmp_path), asynchronous=False)
  monitor.write_collapse_metrics(writer, 1, out)
  writer.flush()
  assert any(tmp_path.iterdir())


class TinyResBlock(nn.Module):
  """conv1 and a projection shortcut read the same array (the stem representation)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(4, (3, 3), name='stem')(x))
    reps = {'stem': x}
    y = nn.relu(nn.Conv(6, (3, 3), name='conv1')(x))
    y = nn.Conv(6, (3, 3), name='conv2')(y)
    x = nn.relu(y + nn.Conv(6, (1, 1), name='shortcut')(x))
    reps['block'] = x
    x = jnp.mean(x, axis=(1, 2))
    reps['pool'] = x
    return nn.Dense(3, name='head')(x), reps


def test_input_ranks_off_by_default_and_deduplicated():
  model = TinyResBlock()
  x = jax.random.normal(jax.random.PRNGKey(0), (10, 6, 6, 2))
  y = jnp.arange(10) % 3
  variables = model.init(jax.random.PRNGKey(1), x)
  key = jax.random.PRNGKey(2)
  default = monitor.make_collapse_metrics_fn(model, ce_loss, max_dims=1000, top_k=3)(
    variables, x, y, 1.0, key
  )
  assert not [k for k in default if k.startswith('rank/input/')]
  out = monitor.make_collapse_metrics_fn(model, ce_loss, max_dims=1000, top_k=3, input_ranks=True)(
    variables, x, y, 1.0, key
  )
  for k, v in default.items():  # the option only adds keys
    np.testing.assert_allclose(np.asarray(out[k]), np.asarray(v), rtol=1e-5, atol=1e-6)
  _, reps = model.apply(variables, x)
  ref = lambda a: int(metrics.numerical_rank(np.asarray(a).reshape(a.shape[0], -1)))
  assert int(out['rank/input/stem']) == ref(x)
  assert int(out['rank/input/conv1']) == int(out['rank/input/shortcut']) == ref(reps['stem'])
  assert int(out['rank/input/head']) == ref(reps['pool'])
  h = jax.nn.relu(
    jax.lax.conv_general_dilated(
      reps['stem'],
      variables['params']['conv1']['kernel'],
      (1, 1),
      'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    + variables['params']['conv1']['bias']
  )
  assert int(out['rank/input/conv2']) == ref(h)


SUBSET_OPTIONS = dict(max_dims=50, top_k=4, max_alignment_rows=64, input_ranks=True)
# TinyCNN on 12 8x8x3 images: every matrix over the limits above gets a subset.
SUBSET_NAMES = {
  'rep/conv1',
  'rep/conv2',
  'input/conv1',
  'input/conv2',
  'input/fc',
  'rows/conv1',
  'rows/conv2',
}


def _tiny_cnn_batch():
  model = TinyCNN()
  images = jax.random.normal(jax.random.PRNGKey(0), (12, 8, 8, 3))
  labels = jnp.arange(12) % 5
  return model, model.init(jax.random.PRNGKey(1), images, train=False), images, labels


def _jit(fn):  # the monitor's cheap CPU codegen: these programs only run once
  return jax.jit(fn, compiler_options=monitor.CPU_COMPILER_OPTIONS)


def _metrics(model, variables, images, labels, **subset_choice):
  return jax.device_get(
    _jit(
      lambda v, x: monitor.collapse_metrics(
        model, v, x, labels, temperature=2.0, loss_fn=ce_loss, **subset_choice, **SUBSET_OPTIONS
      )
    )(variables, images)
  )


def _assert_identical(got, want):
  assert got.keys() == want.keys()
  for name in want:
    np.testing.assert_allclose(
      np.asarray(got[name]), np.asarray(want[name]), rtol=1e-6, atol=1e-7, err_msg=name
    )
    if not np.issubdtype(np.asarray(want[name]).dtype, np.floating):
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_given_subsets_reproduce_the_in_program_draws():
  model, variables, images, labels = _tiny_cnn_batch()
  key = jax.random.PRNGKey(3)
  shapes = {}

  def record(name, n, k):
    shapes[name] = (n, k)
    return jnp.arange(k)

  jax.eval_shape(
    lambda v: monitor.collapse_metrics(
      model, v, images, labels, temperature=2.0, loss_fn=ce_loss, subsets=record, **SUBSET_OPTIONS
    ),
    variables,
  )
  assert set(shapes) == SUBSET_NAMES
  in_program = _metrics(model, variables, images, labels, key=key)
  # the documented in-program draw, evaluated outside the program
  drawn = {
    name: np.asarray(
      metrics.feature_subset_indices(
        n, k, jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
      )
    )
    for name, (n, k) in shapes.items()
  }
  as_constants = _metrics(model, variables, images, labels, subsets=lambda name, n, k: drawn[name])
  _assert_identical(as_constants, in_program)
  as_arguments = jax.device_get(
    _jit(
      lambda v, s: monitor.collapse_metrics(
        model,
        v,
        images,
        labels,
        temperature=2.0,
        loss_fn=ce_loss,
        subsets=lambda name, n, k: s[name],
        **SUBSET_OPTIONS,
      )
    )(variables, drawn)
  )
  _assert_identical(as_arguments, in_program)


def test_monitor_subsets_are_fixed_across_calls_and_resume():
  model, variables, images, labels = _tiny_cnn_batch()
  fn = monitor.make_collapse_metrics_fn(model, ce_loss, **SUBSET_OPTIONS)
  first = jax.device_get(fn(variables, images, labels, 2.0, jax.random.PRNGKey(2)))
  _assert_identical(
    jax.device_get(fn(variables, images, labels, 2.0, jax.random.PRNGKey(2))), first
  )
  resumed = monitor.make_collapse_metrics_fn(model, ce_loss, **SUBSET_OPTIONS)  # new process
  _assert_identical(
    jax.device_get(resumed(variables, images, labels, 2.0, jax.random.key(2))), first
  )
  options = {k: v for k, v in SUBSET_OPTIONS.items() if k != 'top_k'}
  subsets = monitor.subset_indices(model, variables, images, jax.random.PRNGKey(2), **options)
  assert set(subsets) == SUBSET_NAMES
  # the monitor measures exactly these coordinates
  _, reps = model.apply(variables, images)
  a = np.asarray(reps['conv1']).reshape(12, -1)[:, subsets['rep/conv1']]
  assert int(first['rank/rep/conv1']) == int(metrics.numerical_rank(a))
  np.testing.assert_allclose(
    first['sv/rep/conv1'], np.linalg.svd(a.astype(np.float64), compute_uv=False)[:4], rtol=1e-4
  )
  other = monitor.subset_indices(model, variables, images, jax.random.PRNGKey(5), **options)
  assert not np.array_equal(other['rep/conv1'], subsets['rep/conv1'])
  # another process, with another string hash seed, draws the same subset
  code = (
    'from rankdeficit.training import monitor; '
    "print(monitor.host_subsets((0, 2))('rep/conv1', 384, 50).tolist())"
  )
  result = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, 'PYTHONHASHSEED': '123', 'JAX_PLATFORMS': 'cpu'},
  )
  assert json.loads(result.stdout) == subsets['rep/conv1'].tolist()


def test_collapse_metrics_needs_one_subset_choice():
  model, variables, images, labels = _tiny_cnn_batch()
  for choice in ({}, {'key': jax.random.PRNGKey(0), 'subsets': monitor.host_subsets(0)}):
    with pytest.raises(ValueError, match='exactly one of key= .* or subsets='):
      monitor.collapse_metrics(
        model, variables, images, labels, temperature=1.0, loss_fn=ce_loss, **choice
      )


def test_non_finite_spectra_and_matrices_are_kept_out_of_histograms_and_images():
  calls = {}

  class Recorder:
    def __getattr__(self, name):
      return lambda step, values: calls.setdefault(name, {}).update(values)

  monitor.write_collapse_metrics(
    Recorder(),
    3,
    {
      'rank/x': np.float32(4.0),
      'sv/good': np.array([2.0, 1.0], np.float32),
      'sv/bad': np.array([np.nan, 1.0], np.float32),
      'alignment/good': np.eye(2, dtype=np.float32),
      'alignment/bad': np.full((2, 2), np.nan, np.float32),
    },
  )
  assert set(calls['write_histograms']) == {'monitor/sv/good'}
  assert set(calls['write_images']) == {'monitor/alignment/good'}
  assert np.isnan(calls['write_scalars']['monitor/sv/bad/sigma_1'])
  assert calls['write_scalars']['monitor/sv/good/sigma_1'] == 2.0
