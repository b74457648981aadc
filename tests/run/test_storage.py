"""Run directories that are not local paths: a whole run saved and resumed in gs://.

The fake bucket (`fake_gcs`) keeps the gs:// scheme end to end, so every layer takes its
GCS code path (epath's fsspec backend, orbax's GCS commit markers instead of renames,
grain's iterator state through epath), while the bytes land in a local folder: epath's
fsspec filesystem for gs is a `DirFileSystem` over that folder, and the TensorStore
kvstore orbax builds for gs:// (its own GCS driver) is swapped for a `file` kvstore on the
same folder. Nothing reaches the network.
"""

import os

from clu import metric_writers
from etils.epath import gpath
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
import jax
import numpy as np
from orbax.checkpoint._src.serialization import tensorstore_utils
import pytest

from configs import quickstart
from rankdeficit.plan import run_plan
from rankdeficit.run import checkpointing
from rankdeficit.run import run_dir
from rankdeficit.run import runtime
from rankdeficit.run import storage
from rankdeficit.training import train

BUCKET_RUN = 'gs://fake-bucket/runs/quickstart'


class _FakeGcs(DirFileSystem):
  """gs://bucket/a/b, addressed like gcsfs, stored at <root>/bucket/a/b."""

  protocol = ('gs', 'gcs')

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    for prefix in ('gs://', 'gcs://'):
      path = path.removeprefix(prefix)
    return path.rstrip('/')


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
  """gs:// -> tmp_path/bucket/..., through epath (fsspec) and TensorStore (file driver)."""
  bucket_root = tmp_path / 'fake_gcs'
  bucket_root.mkdir()
  fake = _FakeGcs(path=str(bucket_root), fs=LocalFileSystem())
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)  # fsspec, not tf.io.gfile
  monkeypatch.setattr(gpath.backend_lib.fsspec_backend, '_get_filesystem', lambda name: fake)

  def local_kvstore(path):
    bucket, _, blob = str(path).removeprefix('gs://').partition('/')
    return {'driver': 'file', 'path': os.path.join(bucket_root, bucket, blob)}

  monkeypatch.setattr(tensorstore_utils.gcs_utils, 'get_kvstore_for_gcs', local_kvstore)
  # Orbax asks the google-cloud-storage client whether the bucket is hierarchical.
  monkeypatch.setattr(
    tensorstore_utils.gcs_utils, 'is_hierarchical_namespace_enabled', lambda path: False
  )
  monkeypatch.setattr(storage, 'gcs_client_installed', lambda: True)
  # CLU's TensorBoard writer uses TensorFlow's own GCS client: log to absl instead.
  # (train imports clu's writers when it makes one: patched in clu itself.)
  monkeypatch.setattr(
    metric_writers, 'create_default_writer', lambda *a, **k: metric_writers.LoggingWriter()
  )
  yield


def _config(num_steps: int):
  c = quickstart.get_config()
  c.model.width, c.model.depth = 32, 2
  c.num_train_steps, c.checkpoint_every_steps, c.log_every_steps = num_steps, 2, 2
  c.eval_every_steps = 1000
  return c


def test_workdir_path_never_mangles_uris(tmp_path, monkeypatch):
  assert os.fspath(storage.workdir_path('gs://b/run')) == 'gs://b/run'
  assert os.fspath(storage.workdir_path('s3://b/x/y')) == 's3://b/x/y'
  monkeypatch.chdir(tmp_path)  # restored afterwards: later tests keep the repo as cwd
  assert os.fspath(storage.workdir_path('runs/a')) == os.path.join(tmp_path, 'runs', 'a')


def test_unwritable_workdir_names_the_flag(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(PermissionError, match='--workdir'):
    storage.check_writable(blocker / 'run')


def test_gs_workdir_without_the_gcs_client_names_the_package(monkeypatch):
  monkeypatch.setattr(storage, 'gcs_client_installed', lambda: False)
  with pytest.raises(PermissionError, match='pip install google-cloud-storage'):
    storage.check_writable('gs://bucket/run')


def test_shared_workdir_check_is_a_noop_on_one_process(tmp_path):
  storage.check_shared_workdir(tmp_path)
  assert not list(tmp_path.iterdir())


class _Preempted(Exception):
  pass


def test_a_run_saves_and_resumes_in_a_gs_workdir(fake_gcs, monkeypatch):
  devices = jax.devices()[:1]
  save = checkpointing.Checkpointer.save

  def save_then_stop(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    self.wait_until_finished()
    raise _Preempted(step)

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_then_stop)
  with pytest.raises(_Preempted):
    train.train_and_evaluate(_config(4), BUCKET_RUN, devices=devices)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save)
  path = storage.workdir_path(BUCKET_RUN)
  assert (path / run_dir.CONFIG_FILE).exists()
  assert (path / runtime.RUN_INFO_FILE).exists()
  assert checkpointing.Checkpointer(BUCKET_RUN).latest_step == 2
  assert not os.path.exists('gs:')  # nothing went to <cwd>/gs:/...
  # The data iterator state lives in the bucket too (one file per process).
  assert any('data_iter' in str(p) for p in (path / 'checkpoints' / '2').iterdir())

  resumed, results = train.train_and_evaluate(_config(4), BUCKET_RUN, devices=devices)
  assert int(resumed.step) == 4
  assert results['eval/num_examples'] > 0
  assert len(storage.read_json(path / runtime.RUN_INFO_FILE)) == 2  # two starts recorded
  config, _, variables, step = run_plan.load_run(BUCKET_RUN)
  assert step == 4 and config.num_train_steps == 4
  for got, want in zip(jax.tree.leaves(variables['params']), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
