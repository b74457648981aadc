"""Wall-clock timings of an analysis's stages (`timings_s` in analysis.json)."""

from __future__ import annotations

import contextlib
import time


class Timer:
  """`with timer(name):` adds the block's seconds to `timer.timings[name]` (rounded to ms).

  A stage timed more than once (one extraction pass per layer group) accumulates.
  """

  def __init__(self):
    self.timings: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      elapsed = time.perf_counter() - t0
      self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 3)
