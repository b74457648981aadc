"""What may change when a run directory is resumed, and the default run directory name.

A checkpoint holds weights trained under the config stored inside it (its item `config`,
sealed by the checkpoint's checksums; see rankdeficit/run/checkpointing.py) and copied next to
it as config.json. The stored copy is the run's identity: deleting or editing config.json
changes nothing, and a missing or unreadable config.json is restored from it
(`restore_config_file`). Checkpoints written before configs were stored fall back on
config.json. Resuming under a different loss, temperature, width, data or optimiser would
continue those weights under a config they were not trained with, and config.json would
then say something false. `check_resumable` refuses that, naming every differing field, unless
the field only affects bookkeeping (`BOOKKEEPING_FIELDS`) or is a longer budget
(`EXTENDABLE_FIELDS`, only with a temperature schedule that does not depend on the
total number of steps). `num_workers` is not bookkeeping: grain's saved iterator state
and the batch composition depend on it.
"""

from __future__ import annotations

import hashlib
import json

from absl import logging
from etils import epath
import jax
import ml_collections

from rankdeficit.run import run_dir

BOOKKEEPING_FIELDS = frozenset(
  {
    'log_every_steps',
    'eval_every_steps',
    'checkpoint_every_steps',
    'keep_checkpoints',
    'metrics_every_steps',
    'metrics_batch_size',
    'metrics_input_ranks',
    'max_feature_dims',
    'eval_batch_size',
    'data_dir',
    'distributed',
    'ood_dataset',
    'ood_detection_dataset',
    'download',
    'in_memory',
    'compilation_cache_dir',
    'profile',
    'device_resize_canvas',  # host or device resize: pixels differ by < 1 grey level
    'steps_per_dispatch',  # steps per jitted call: the same steps, in the same order
  }
)
EXTENDABLE_FIELDS = frozenset({'num_train_steps', 'num_epochs'})
# Fields added after runs were saved, with the value every earlier run trained under: a saved
# config without one is compared against it, and run names hash it only when it differs (so
# the names of earlier runs stay what they were).
ADDED_FIELDS = {'input_on_device': False}


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def config_values(config: ml_collections.ConfigDict) -> dict:
  """Flat {'model.width': 512, ...} of `config`, JSON-normalised (tuples -> lists)."""
  return _flatten(json.loads(config.to_json_best_effort()))


def _extension_ok(field: str, saved, new, values: dict) -> bool:
  if values.get('temperature_schedule') not in ('constant', 'step'):
    return False  # linear/cosine schedules are functions of the total number of steps
  if field == 'num_train_steps' and (saved <= 0) != (new <= 0):
    return False  # switching between a step budget and an epoch budget
  return new >= saved


def differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields (with 'saved -> now') that forbid resuming a run saved as `saved`."""
  values = config_values(config)
  saved = {**ADDED_FIELDS, **_flatten(saved)}
  found = []
  # Any other field the saved config lacks was added to the code after the run was saved;
  # the run trained under its default then, which is what an unchanged command passes now,
  # so it is not compared (the package cannot read configs/base.py: it is not installed).
  for field in sorted(set(saved)):
    old, new = saved[field], values.get(field, '<absent>')
    if old == new or field in BOOKKEEPING_FIELDS:
      continue
    if (
      field in EXTENDABLE_FIELDS
      and isinstance(old, (int, float))
      and isinstance(new, (int, float))
      and _extension_ok(field, old, new, values)
    ):
      continue
    found.append(f'{field} ({old!r} -> {new!r})')
  return found


def has_checkpoint(workdir: epath.PathLike) -> bool:
  directory = run_dir.RunDir(workdir).checkpoints
  return directory.exists() and any(p.name.isdigit() for p in directory.iterdir())


def _read_config_file(workdir: epath.PathLike) -> dict | None:
  """config.json as a dict, None if absent; ValueError (one line) if it holds no config."""
  path = run_dir.RunDir(workdir).config_file
  if not path.exists():
    return None
  fix = 'it describes the checkpoints next to it: restore it, or choose another --workdir.'
  try:
    saved = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); {fix}') from e
  if not isinstance(saved, dict):
    raise ValueError(f'{path} holds {json.dumps(saved)[:40]}, not a config object; {fix}')
  return saved


def saved_config(workdir: epath.PathLike) -> dict | None:
  """The config `workdir`'s checkpoints were trained under (nested dict), None if unknown.

  The copy stored in the newest checkpoint comes first; checkpoints written before configs
  were stored fall back on config.json (ValueError if it is not a JSON object).
  """
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel  (orbax)

  stored = checkpointing.stored_config(workdir)
  return stored if stored is not None else _read_config_file(workdir)


def check_resumable(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
  """Raises ValueError if `workdir` holds checkpoints trained under a different config."""
  if not has_checkpoint(workdir):
    return
  saved = saved_config(workdir)
  if saved is None:
    return  # old checkpoints without config.json: only the restore can tell
  found = differences(saved, config)
  if found:
    raise ValueError(
      f'workdir {workdir} holds checkpoints trained with a different config: '
      f'{"; ".join(found)}. Resume with the saved values, or choose another --workdir '
      f'(only {", ".join(sorted(BOOKKEEPING_FIELDS))} and a longer num_train_steps/'
      f'num_epochs may change).'
    )


def restore_config_file(workdir: epath.PathLike) -> bool:
  """Rewrites a missing or unreadable config.json from the config stored in the newest
  checkpoint (process 0); returns whether it did."""
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel  (orbax)

  if not has_checkpoint(workdir):
    return False
  try:
    if _read_config_file(workdir) is not None:
      return False
  except ValueError:
    pass  # unreadable: replaced below when the checkpoint holds the config
  stored = checkpointing.stored_config(workdir)
  if stored is None:
    return False
  path = run_dir.RunDir(workdir).config_file
  if jax.process_index() == 0:
    path.write_text(json.dumps(stored, indent=2, sort_keys=True))
  logging.warning(
    '%s was missing or unreadable: restored it from the config stored in the checkpoints.', path
  )
  return True


def run_name(config: ml_collections.ConfigDict, config_stem: str) -> str:
  """`<config stem>_T<T>_seed<seed>_<hash>`: the hash covers every field that changes the
  weights, so runs that differ only in loss, init, width or data never share a name, and
  re-running the same command finds (and resumes) its own directory."""
  values = {
    k: v
    for k, v in config_values(config).items()
    if k not in BOOKKEEPING_FIELDS | EXTENDABLE_FIELDS
    and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
  }
  digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
  return f'{config_stem}_T{config.temperature:g}_seed{config.seed}_{digest}'
