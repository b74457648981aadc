"""One training process per run directory.

Two processes training into one workdir overwrite each other's checkpoints, so a run
takes `workdir/lock` (JSON: host, pid, start time, heartbeat) before it compiles anything
and removes it when it ends. A second process exits with `LockedError` naming the holder.
A lock is stale, and taken over with a warning, when its holder is a dead process on this
host, or (other hosts, whose pids cannot be checked) when its heartbeat is older than
`STALE_AFTER_S`; the train loop refreshes it at most once a minute.

Local paths are created with O_EXCL (atomic); other `etils.epath` paths (gs://) are
checked and then written, which leaves a window of a second or so.
"""

from __future__ import annotations

import json
import os
import socket
import time

from absl import logging
from etils import epath
import jax

LOCK_FILE = 'lock'
STALE_AFTER_S = 15 * 60
_REFRESH_EVERY_S = 60


class LockedError(RuntimeError):
  """The workdir is held by another live process."""


def pid_alive(pid: int) -> bool:
  """Whether process `pid` of this host exists (one of another user counts as alive)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def read_holder(workdir: epath.PathLike) -> dict | None:
  """The lock's holder {'host', 'pid', 'started', 'heartbeat'}, or None if unlocked."""
  path = epath.Path(workdir) / LOCK_FILE
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {'host': '?', 'pid': -1, 'started': 0, 'heartbeat': 0}  # unreadable: stale


def _is_stale(holder: dict) -> bool:
  if holder.get('host') == socket.gethostname():
    return not pid_alive(int(holder.get('pid', -1)))
  return time.time() - float(holder.get('heartbeat', 0)) > STALE_AFTER_S


def live_holder(workdir: epath.PathLike) -> dict | None:
  """The lock's holder if it is a live process (the run is training now), else None."""
  holder = read_holder(workdir)
  return None if holder is None or _is_stale(holder) else holder


def describe(holder: dict) -> str:
  """'host H pid P (since <start time>)'."""
  return _describe(holder)


def _describe(holder: dict) -> str:
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))
  return f'host {holder.get("host")} pid {holder.get("pid")} (since {started})'


def check_unlocked(workdir: epath.PathLike) -> None:
  """Raises LockedError if a live process holds `workdir` (creates nothing)."""
  holder = read_holder(workdir)
  if holder is not None and not _is_stale(holder) and not _is_me(holder):
    raise LockedError(
      f'workdir {workdir} is locked by {_describe(holder)}, which is still training '
      f'there; wait for it, stop it, or choose another --workdir (if it is dead, delete '
      f'{epath.Path(workdir) / LOCK_FILE}).'
    )


def _is_me(holder: dict) -> bool:
  return holder.get('host') == socket.gethostname() and holder.get('pid') == os.getpid()


class WorkdirLock:
  """Context manager holding `workdir/lock` (on process 0; other processes share it)."""

  def __init__(self, workdir: epath.PathLike):
    self._path = epath.Path(workdir) / LOCK_FILE
    self._held = False
    self._refreshed = 0.0

  def _record(self, started: float) -> str:
    return json.dumps(
      {
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'started': started,
        'heartbeat': time.time(),
      }
    )

  def _create(self) -> bool:
    text = self._record(time.time())
    if not str(self._path).startswith(('gs://', 's3://')):
      try:
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        f.write(text)
      return True
    if self._path.exists():
      return False
    self._path.write_text(text)
    return True

  def __enter__(self) -> WorkdirLock:
    if jax.process_index() != 0:
      return self
    while not self._create():
      holder = read_holder(self._path.parent)
      if holder is None:
        continue  # released in between
      if _is_me(holder):
        return self  # re-entered by the process that holds it
      check_unlocked(self._path.parent)
      logging.warning(
        'Taking over the stale lock of %s in %s.', _describe(holder), self._path.parent
      )
      self._path.unlink(missing_ok=True)
    self._held = True
    self._refreshed = time.time()
    return self

  def refresh(self) -> None:
    """Updates the heartbeat (at most once a minute), so other hosts see a live holder."""
    if self._held and time.time() - self._refreshed > _REFRESH_EVERY_S:
      holder = read_holder(self._path.parent) or {}
      self._path.write_text(self._record(float(holder.get('started', time.time()))))
      self._refreshed = time.time()

  def __exit__(self, *exc) -> None:
    if self._held:
      self._path.unlink(missing_ok=True)
      self._held = False
