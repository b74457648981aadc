"""Checksums of finished checkpoints, verified before a restore.

Orbax's atomic rename guarantees a checkpoint directory is complete, not that its bytes
stay intact afterwards (bit rot, a truncated copy, a hand edit). After orbax finalises step
`s`, `seal` writes `checkpoints/<s>/rankdeficit_sha256.json`: the size and SHA-256 of every
file of the step. `verify` recomputes them and names the first file that differs. A
checkpoint without a manifest (killed between finalisation and sealing, or written before
this existed) is "unsealed": it is restored if orbax can read it, which still catches
truncated or garbage files that fail to parse.

All file I/O goes through `etils.epath`, so run directories on gs:// work too.
"""

from __future__ import annotations

import hashlib
import json

from absl import logging
from etils import epath

MANIFEST = 'rankdeficit_sha256.json'
CORRUPT_DIR = 'corrupt'
_CHUNK = 1 << 22


def _digest(path: epath.Path) -> str:
  sha = hashlib.sha256()
  with path.open('rb') as f:
    while chunk := f.read(_CHUNK):
      sha.update(chunk)
  return sha.hexdigest()


def _files(step_dir: epath.Path) -> dict[str, epath.Path]:
  """Every file under `step_dir` but the manifest, by relative path (no `**` glob: GCS)."""
  found, pending = {}, [step_dir]
  while pending:
    for p in pending.pop().iterdir():
      if p.is_dir():
        pending.append(p)
      elif p.name != MANIFEST:
        found[str(p.relative_to(step_dir))] = p
  return found


def seal(step_dir: epath.PathLike) -> None:
  """Records size and SHA-256 of every file of a finished checkpoint step directory."""
  step_dir = epath.Path(step_dir)
  entries = {
    name: {'size': p.stat().length, 'sha256': _digest(p)}
    for name, p in sorted(_files(step_dir).items())
  }
  tmp = step_dir / (MANIFEST + '.tmp')
  try:
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.replace(step_dir / MANIFEST)  # a re-seal overwrites
  except BaseException:
    tmp.unlink(missing_ok=True)  # e.g. a full disk: the step stays complete, unsealed
    raise


def is_sealed(step_dir: epath.PathLike) -> bool:
  return (epath.Path(step_dir) / MANIFEST).exists()


def verify(step_dir: epath.PathLike, under: str | None = None) -> str | None:
  """Returns None if the step matches its manifest (or has none), else what is wrong.

  With `under` (an item of the step, e.g. 'config'), only that folder's files are checked.
  """
  step_dir = epath.Path(step_dir)
  manifest = step_dir / MANIFEST
  if not manifest.exists():
    return None
  try:
    entries = json.loads(manifest.read_text())
    expected = {name: (int(e['size']), str(e['sha256'])) for name, e in entries.items()}
  except (ValueError, TypeError, KeyError, AttributeError) as e:
    return f'unreadable checksum manifest {manifest} ({e})'
  folder = step_dir if under is None else step_dir / under
  present = _files(folder) if folder.exists() else {}
  if under is not None:
    present = {f'{under}/{name}': p for name, p in present.items()}
    expected = {k: v for k, v in expected.items() if k.startswith(f'{under}/')}
  for name, (size, sha) in expected.items():
    if name not in present:
      return f'missing file {step_dir / name}'
    if present[name].stat().length != size:
      return f'size of {step_dir / name} differs from the one recorded at save time'
    if _digest(present[name]) != sha:
      return f'checksum of {step_dir / name} differs from the one recorded at save time'
  extra = sorted(set(present) - set(expected))
  if extra:
    return f'unexpected file {step_dir / extra[0]}'
  return None


def quarantine(checkpoint_dir: epath.PathLike, step: int) -> epath.Path:
  """Moves `checkpoint_dir/<step>` to `checkpoint_dir/corrupt/<step>` (kept for inspection)."""
  checkpoint_dir = epath.Path(checkpoint_dir)
  target = checkpoint_dir / CORRUPT_DIR / str(step)
  suffix = 0
  while target.exists():
    suffix += 1
    target = checkpoint_dir / CORRUPT_DIR / f'{step}.{suffix}'
  target.parent.mkdir(parents=True, exist_ok=True)
  (checkpoint_dir / str(step)).rename(target)
  logging.warning('Moved the corrupt checkpoint of step %d to %s.', step, target)
  return target
