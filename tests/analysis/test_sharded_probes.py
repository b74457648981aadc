"""analysis.sharded_probes: data-parallel probes on row-sharded features give the probes of
`probes.train_probes` (the implementation that trains on gathered host features) on the
same rows, whatever the rows' physical order and padding. Run with
XLA_FLAGS=--xla_force_host_platform_device_count=8."""

import os
import subprocess
import sys

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rankdeficit.analysis import extraction
from rankdeficit.analysis import probes
from rankdeficit.analysis import rows
from rankdeficit.analysis import sharded_probes

N, C, WIDTHS = 300, 4, (12, 20, 3)
PADDING = 20  # rows in all: 320 = 40 per device

pytestmark = pytest.mark.skipif(
  jax.device_count() < 8,
  reason='needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8',
)


def _data(seed: int = 0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, C, N).astype(np.int32)
  centres = rng.standard_normal((C, 8))
  xs = [
    (
      (centres[y] + rng.standard_normal((N, 8))) @ rng.standard_normal((8, w)) * (i + 1) ** 3
    ).astype(np.float32)
    for i, w in enumerate(WIDTHS)
  ]
  return xs, y


def _scattered(xs, y, seed: int = 1):
  """The rows in a random physical order with zero padding rows among them (as the
  analysis's device-major layout puts them), sharded over 8 devices: Features."""
  rng = np.random.default_rng(seed)
  slots = rng.permutation(N + PADDING)
  ids = np.full(N + PADDING, -1, np.int32)
  ids[slots[:N]] = np.arange(N)
  real = ids >= 0
  mesh = Mesh(np.asarray(jax.devices()[:8]), ('data',))

  def place(a):
    out = np.zeros((N + PADDING, *a.shape[1:]), a.dtype)
    out[real] = a[ids[real]]
    return jax.device_put(out, NamedSharding(mesh, P('data')))

  reps = {f'l{i}': place(x) for i, x in enumerate(xs)}
  return extraction.Features(
    reps,
    place(np.zeros((N, C), np.float32)),
    place(y),
    jax.device_put(ids, NamedSharding(mesh, P('data'))),
    {},
    N,
  )


@pytest.fixture(autouse=True, scope='module')
def _one_blas_thread():
  with rows.cpu_blas_threads():
    yield


@pytest.mark.parametrize(
  'config',
  [
    probes.ProbeConfig(num_epochs=3, batch_size=64),  # 5 steps, remainder 44
    probes.ProbeConfig(num_epochs=2, batch_size=1000, max_group_bytes=1),  # one layer a group
    probes.ProbeConfig(num_epochs=2, batch_size=50, standardize=False, decoupled_weight_decay=True),
  ],
)
def test_same_probes_as_training_on_the_gathered_rows(config):
  xs, y = _data()
  key = jax.random.PRNGKey(3)
  want = probes.train_probes(xs, y, C, key=key, config=config)
  f = _scattered(xs, y)
  got = sharded_probes.train_probes(
    list(f.reps.values()), f.labels, f.ids, N, C, key=key, config=config
  )
  for g, w in zip(got, want, strict=True):
    assert g.w.shape == w.w.shape
    for name in probes.Probe._fields:
      np.testing.assert_allclose(getattr(g, name), getattr(w, name), rtol=2e-4, atol=2e-5)


def test_accuracy_counts_every_real_row_once():
  xs, y = _data()
  f = _scattered(xs, y)
  probe = probes.train_probe(xs[1], y, C, key=jax.random.PRNGKey(0))
  want = probes.probe_accuracy(probe, xs[1], y)
  for chunk in (7, 40, 8192):  # 40 rows per device: overlapping last chunk, one, all
    got = sharded_probes.probe_accuracy(probe, f.reps['l1'], f.labels, f.ids, N, batch_size=chunk)
    assert got == want
  accuracies = sharded_probes.fit_layer_probes(
    f, f, list(f.reps), C, key=jax.random.PRNGKey(0), config=probes.ProbeConfig(num_epochs=2)
  )
  assert list(accuracies) == ['l0', 'l1', 'l2'] and all(0 <= a <= 1 for a in accuracies.values())


def test_labels_out_of_range_are_refused():
  xs, y = _data()
  f = _scattered(xs, y)
  with pytest.raises(ValueError, match='labels must be in'):
    sharded_probes.train_probes([f.reps['l0']], f.labels, f.ids, N, 2, key=jax.random.PRNGKey(0))


_PEAK_SCRIPT = """
import jax, numpy as np
from rankdeficit.analysis import probes, rows, sharded_probes
def kib(field):
  return int(open('/proc/self/status').read().split(field + ':')[1].split()[0])
n, d = 20000, 2000
mesh = rows.analysis_mesh(jax.devices()[:1])
x = rows.local_rows_to_global(mesh, np.random.default_rng(0).standard_normal((n, d), np.float32))
y = rows.local_rows_to_global(mesh, (np.arange(n) % 10).astype(np.int32))
ids = rows.local_rows_to_global(mesh, np.arange(n, dtype=np.int32))
open('/proc/self/clear_refs', 'w').write('5')  # the peak (VmHWM) restarts from here
before = kib('VmRSS')
sharded_probes.train_probes([x], y, ids, n, 10, key=jax.random.PRNGKey(0),
                            config=probes.ProbeConfig(num_epochs=1))
print((kib('VmHWM') - before) * 1024 / (n * d * 4))
"""


@pytest.mark.skipif(not os.path.exists('/proc/self/clear_refs'), reason='needs Linux /proc')
def test_training_peak_memory_stays_near_its_features():
  """Peak memory of a probe beyond its features: a 20,000 x 2,000 layer on one CPU device.
  Vmapped standardisation made XLA:CPU hold ~6 copies (12 GB for a ResNet-20 layer of the
  paper's analysis, which the OOM killer ended: 8.7x here); now about 3x: the stacked
  group, the standardisation's fused pass and the compile."""
  out = subprocess.run(
    [sys.executable, '-c', _PEAK_SCRIPT],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, 'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false'},
  )
  extra = float(out.stdout.strip().splitlines()[-1])
  assert extra < 4, f'probe training held {extra:.1f}x its features'
