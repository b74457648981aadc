"""Graceful stop on SIGTERM / SIGINT: finish the step, checkpoint it, exit.

TPU pods, SLURM (`--signal=TERM@60`, `scancel`) and Kubernetes send SIGTERM some seconds
before they kill a job. `StopRequest` turns that signal (and Ctrl-C) into a flag the train
loop reads once per step; the loop then saves a checkpoint at the step it reached, stops
the input workers and raises `Stopped`. `rankdeficit.main` exits with 128 + the signal
number (143 for SIGTERM, 130 for SIGINT), the status a shell reports for a job killed by
that signal, so schedulers that retry preempted jobs (Kubernetes `restartPolicy:
OnFailure`, SLURM `--requeue`) restart it and the rerun resumes from that checkpoint.

Multi-host: one host's SIGTERM must not make it stop alone (the others would wait forever
in the next collective). With `jax.process_count() > 1` SIGTERM is left to JAX's
preemption service (`jax.distributed.initialize` installs it), which the loop consults
through orbax's `CheckpointManager.reached_preemption`, so every host saves the same step.

Input workers (grain, `num_workers > 0`) are started with the signals ignored (see
`StopRequest.starting_workers`) and stopped by the loop when it exits.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType

from absl import logging
import jax


class Stopped(Exception):
  """Training stopped early on a signal, after saving a checkpoint at `step`."""

  def __init__(self, step: int, signum: int):
    super().__init__(
      f'Stopped by {signal.Signals(signum).name} at step {step}; its '
      f'checkpoint is saved and rerunning the same command resumes from it.'
    )
    self.step = step
    self.signum = signum

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class StopRequest:
  """Context manager recording SIGTERM/SIGINT instead of dying; `signum` is the last one.

  A second SIGINT (Ctrl-C twice) restores Python's default and interrupts at once. Handlers
  are only installed from the main thread (Python's rule) and restored on exit.
  """

  def __init__(self, signals: tuple[int, ...] | None = None):
    if signals is None:
      signals = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else (signal.SIGINT,)
    self._signals = signals
    self._previous: dict[int, object] = {}
    self.signum: int | None = None

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning(
      'Received %s: finishing this step, saving a checkpoint, then stopping.',
      signal.Signals(signum).name,
    )

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  @contextlib.contextmanager
  def starting_workers(self):
    """Processes started inside (grain's input workers) ignore SIGTERM/SIGINT for life.

    Ctrl-C, `timeout` and SLURM signal the whole process group; a worker killed by that
    signal would leave this process waiting forever for its next batch. An ignored signal
    stays ignored across `exec`, so workers spawned now stop only when the loop closes the
    iterator. A signal arriving inside is lost, so wrap only start-up (the first batch),
    where the state still equals the latest checkpoint: nothing can be lost.
    """
    if not self._previous:
      yield
      return
    for s in self._previous:
      signal.signal(s, signal.SIG_IGN)
    try:
      yield
    finally:
      for s in self._previous:
        signal.signal(s, self._handle)

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
