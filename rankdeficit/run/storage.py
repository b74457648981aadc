"""Run directories on any filesystem `etils.epath` reaches: local disks, gs://, s3://.

A TPU pod's hosts share no disk, so its workdir is a bucket (`gs://bucket/runs/x`). Every
file of a run therefore goes through `epath.Path` (orbax and grain take the same paths), and
nothing applies `os.path` functions to a workdir: `os.path.abspath('gs://b/run')` would
silently become `<cwd>/gs:/b/run`.

`check_shared_workdir` verifies, before training, that every process of a multi-process run
sees the same directory (a per-host local path on a pod would give each host its own
checkpoints and a run that can never resume consistently).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from typing import Any

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from rankdeficit.run import distributed

_SHARED_MARKER = '.shared_workdir_check'


def is_uri(path: str | os.PathLike) -> bool:
  """True for 'scheme://...' paths (gs://, s3://), which must never go through os.path."""
  return '://' in os.fspath(path)


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """The workdir as an absolute `epath.Path` (local paths made absolute, URIs as given)."""
  if is_uri(workdir):
    return epath.Path(workdir)
  return epath.Path(os.path.abspath(os.fspath(workdir)))


def device_of(path: str | os.PathLike) -> str:
  """The filesystem holding `path`, for messages: '/mnt/scratch (tmpfs)' (its mount point
  and type, from /proc/mounts), or the bucket of a URI ('gs://bucket')."""
  if is_uri(path):
    scheme, rest = os.fspath(path).split('://', 1)
    return f'{scheme}://{rest.split("/")[0]}'
  real = os.path.realpath(os.fspath(path))
  mount, kind = '', ''
  try:
    with open('/proc/mounts', encoding='utf-8') as f:
      for line in f:
        fields = line.split()
        if len(fields) < 3:
          continue
        point = fields[1].replace('\\040', ' ')
        inside = real == point or real.startswith(point.rstrip('/') + '/')
        if inside and len(point) > len(mount):
          mount, kind = point, fields[2]
  except OSError:  # not Linux: name the directory itself
    return real
  return f'{mount} ({kind})' if mount else real


def write_json(path: epath.PathLike, obj: Any, **kwargs) -> None:
  """Writes `obj` as JSON (replaces the file; on object stores a write is atomic anyway)."""
  epath.Path(path).write_text(json.dumps(obj, **kwargs))


def read_json(path: epath.PathLike) -> Any:
  return json.loads(epath.Path(path).read_text())


def gcs_client_installed() -> bool:
  """Orbax lists gs:// checkpoint directories with the google-cloud-storage client."""
  try:
    return importlib.util.find_spec('google.cloud.storage') is not None
  except ModuleNotFoundError:  # no google.cloud namespace at all
    return False


def check_writable(workdir: str | os.PathLike) -> None:
  """Creates the workdir and writes/deletes a probe file; PermissionError naming the fix."""
  if os.fspath(workdir).startswith('gs://') and not gcs_client_installed():
    raise PermissionError(
      f'--workdir={os.fspath(workdir)!r} is on GCS, whose checkpoints '
      f'orbax lists with google-cloud-storage: pip install '
      f'google-cloud-storage (or use a local/NFS workdir).'
    )
  path = workdir_path(workdir)
  probe = path / f'.write_check_{jax.process_index()}'
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except Exception as e:  # epath backends raise OSError, tf/fsspec their own errors
    raise PermissionError(
      f'The workdir {os.fspath(workdir)!r} is not writable ({e}); choose another --workdir.'
    ) from e


def check_shared_workdir(workdir: str | os.PathLike) -> None:
  """Raises ValueError on every process unless all processes see the same workdir.

  Process 0 writes a random token into the workdir; after a barrier every other process
  reads it back. A no-op with one process.
  """
  if jax.process_count() == 1:
    return
  marker = workdir_path(workdir) / _SHARED_MARKER
  token = distributed.broadcast_from_main(np.frombuffer(secrets.token_bytes(8), np.uint32))
  expected = bytes(np.asarray(token, np.uint32)).hex()
  if distributed.is_main_process():
    marker.write_text(expected)
  distributed.barrier('shared_workdir_written')
  try:
    seen = marker.read_text().strip() == expected
  except Exception:  # pylint: disable=broad-except
    seen = False
  ok = np.asarray(multihost_utils.process_allgather(np.int32(seen))).reshape(-1)
  distributed.barrier('shared_workdir_read')
  if distributed.is_main_process():
    marker.unlink(missing_ok=True)
  if not ok.all():
    blind = [int(p) for p in np.flatnonzero(ok == 0)]
    raise ValueError(
      f'--workdir={os.fspath(workdir)!r} is not the same directory on every process: '
      f'process(es) {blind} cannot see the file process 0 wrote there. A multi-host run '
      f'needs storage every host sees: a bucket (gs://bucket/runs/x), NFS or Filestore, '
      f"not a path on each host's local disk."
    )
