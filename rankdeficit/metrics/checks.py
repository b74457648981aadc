"""Argument checks of the metrics: errors eagerly, NaN (or rank -1) under ``jit``.

A metric called on concrete values (eagerly, or with Python numbers) raises a one-line
``ValueError`` naming the argument and the fix before any compute. Inside someone
else's ``jit`` the values are tracers, so the same conditions are checked on device and
turn the result into NaN (integer ranks: ``-1``), never a plausible number. Checks on
shapes (empty inputs, ``dim > D``) always raise, since shapes are static.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array when its value is known now, ``None`` under tracing."""
  if x is None or isinstance(x, jax.core.Tracer):
    return None
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return None  # spread over several processes: checked on device instead
  return np.asarray(x)


def tolerance(name: str, value: Any) -> None:
  """``atol``/``rtol``: ``None`` or a number >= 0 (not NaN)."""
  v = concrete(value)
  if v is not None and (np.any(np.isnan(v)) or np.any(v < 0)):
    raise ValueError(f'{name} must be >= 0 (or None for the default rule), got {v}.')


def tolerance_ok(value: Any) -> jax.Array | bool:
  """Traced version of ``tolerance``: True when ``value`` is None or >= 0."""
  if value is None:
    return True
  value = jnp.asarray(value)
  return jnp.all(value >= 0)  # False for NaN too


def positive(name: str, value: Any) -> None:
  """A strictly positive, non-NaN number (e.g. a temperature)."""
  v = concrete(value)
  if v is not None and not np.all(v > 0):
    raise ValueError(f'{name} must be > 0, got {v}.')


def non_empty(name: str, x: Any) -> None:
  """At least one row along axis 0."""
  if np.shape(x)[0] == 0:
    raise ValueError(f'{name} is empty (shape {np.shape(x)}); pass at least one sample.')


def labels_in_range(labels: Any, num_classes: int, mask: Any = None) -> None:
  """Every (unmasked) label in ``[0, num_classes)``; skipped for traced labels."""
  y = concrete(labels)
  if y is None:
    return
  keep = (
    np.ones(y.shape, bool)
    if mask is None or concrete(mask) is None
    else (concrete(mask).astype(bool))
  )
  bad = y[keep & ((y < 0) | (y >= num_classes))]
  if bad.size:
    raise ValueError(
      f'labels must lie in [0, {num_classes}) (num_classes), got '
      f'{np.unique(bad)[:5].tolist()}; fix num_classes or the labels.'
    )


def class_counts(counts: Any) -> None:
  """Counts of ``ClassStats``: finite (in-range labels) and every class present."""
  n = concrete(counts)
  if n is None:
    return
  if not np.all(np.isfinite(n)):
    raise ValueError(
      'ClassStats.counts is NaN: labels outside [0, num_classes) were '
      'folded in; fix num_classes or the labels.'
    )
  if np.any(n == 0):
    raise ValueError(
      f'classes {np.flatnonzero(n == 0)[:5].tolist()} have no samples; '
      'NC metrics need every class (pass num_classes = classes present).'
    )


def real(name: str, x: Any) -> None:
  """A real (non-complex) array; raises under ``jit`` too, since the dtype is static."""
  if jnp.iscomplexobj(x):
    raise ValueError(
      f'{name} is complex ({jnp.result_type(x)}); this metric needs real '
      f'input: pass jnp.real(x), jnp.abs(x) or a real matrix.'
    )
