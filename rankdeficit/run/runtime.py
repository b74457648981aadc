"""What a run needs from its environment, and what it records about it.

* `set_xla_cpu_flags()`: the XLA CPU flags the project's programs run with (below), added to
  XLA_FLAGS before JAX starts its backends; every entry point calls it first.
* `enable_compilation_cache(dir)`: JAX's persistent compilation cache (local or gs://), so
  a restarted run or the next point of a sweep loads its XLA executables instead of
  recompiling them (minutes for a ResNet-50 on a pod).
* `profile_hook(config, workdir)`: a CLU `periodic_actions.Profile` on process 0 when
  `config.profile` is set; the trace lands in the workdir for TensorBoard's profile tab.
* `record_run_info(workdir)`: appends one entry per start (first launch and every resume)
  to `workdir/run_info.json`: package versions, git commit, command line, devices.
  Reviewers of a table can then tell which code, libraries and hardware produced it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import TYPE_CHECKING, Any, MutableMapping

from absl import logging
import jax
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

from rankdeficit.run import distributed
from rankdeficit.run import storage

if TYPE_CHECKING:  # CLU imports TensorFlow: only where a hook is made
  from clu import periodic_actions

RUN_INFO_FILE = 'run_info.json'
PACKAGES = (
  'rankdeficit',
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax-checkpoint',
  'grain',
  'clu',
  'etils',
  'numpy',
  'ml-collections',
  'tensorflow-datasets',
  'submitit',
)


# jaxlib 0.10's XLA CPU hands convolutions, dots and reductions to YNNPACK. Its convolutions
# are slower than XLA's own (Eigen) on both CPUs measured, its dots are not: convolutions go
# to Eigen, the rest stays with YNNPACK (same losses to 1e-7). The measurements are in
# tools/benchmark.py's docstring (ResNet-20 step 1.6x faster on an AVX2 EPYC).
XLA_CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'individual_dot,dot,reduce'}
# The jaxlib releases whose XLA knows these flags (an unknown flag in XLA_FLAGS aborts).
XLA_CPU_FLAGS_JAXLIB = ('0.10.',)


def set_xla_cpu_flags(environ: MutableMapping[str, str] | None = None) -> str:
  """Adds `XLA_CPU_FLAGS` to XLA_FLAGS in `environ` (default os.environ); returns XLA_FLAGS.

  A flag that XLA_FLAGS already names is left as the user set it (the way to opt out:
  `--xla_cpu_experimental_ynn_fusion_type=` hands nothing to YNNPACK). Nothing is added
  under a jaxlib outside `XLA_CPU_FLAGS_JAXLIB`. XLA reads XLA_FLAGS once, when JAX starts
  its backends: call this first (a warning says when it comes too late for this process;
  child processes still inherit it). The flags only concern XLA's CPU compiler.
  """
  environ = os.environ if environ is None else environ
  current = environ.get('XLA_FLAGS', '')
  if not jax.lib.__version__.startswith(XLA_CPU_FLAGS_JAXLIB):
    return current
  named = {word.lstrip('-').split('=', 1)[0] for word in current.split()}
  added = [f'--{name}={value}' for name, value in XLA_CPU_FLAGS.items() if name not in named]
  if not added:
    return current
  environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()
  if environ is os.environ and xla_bridge.backends_are_initialized():
    logging.warning('XLA_FLAGS set after JAX started; not used by this process: %s', added)
  return environ['XLA_FLAGS']


def enable_compilation_cache(cache_dir: str) -> None:
  """Turns on JAX's persistent compilation cache in `cache_dir` ('' = leave it off)."""
  if not cache_dir:
    return
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  # Cache every executable worth more than a second of compile time, whatever its size.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  logging.info('Persistent compilation cache: %s', cache_dir)


def profile_hook(config, workdir: str) -> periodic_actions.Profile | None:
  """A CLU profiler hook (process 0, `config.profile`), or None."""
  if not config.get('profile', False) or not distributed.is_main_process():
    return None
  from clu import periodic_actions  # pylint: disable=import-outside-toplevel,redefined-outer-name

  return periodic_actions.Profile(
    logdir=os.fspath(storage.workdir_path(workdir)),
    num_profile_steps=int(config.get('profile_num_steps', 5)),
    first_profile=int(config.get('profile_first_step', 10)),
    every_secs=None,
  )


def _git_commit() -> str | None:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    out = subprocess.run(
      ['git', '-C', repo, 'rev-parse', 'HEAD'],
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', '-C', repo, 'status', '--porcelain', '--untracked-files=no'],
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return None  # not a git checkout (an installed wheel), or no git binary
  return out + ('-dirty' if dirty.strip() else '')


def _versions() -> dict[str, str | None]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def collect_run_info() -> dict[str, Any]:
  """This process's view of the run: code, libraries, command line and devices."""
  devices = jax.devices()
  return {
    'time_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'command_line': [sys.executable] + sys.argv,
    'git_commit': _git_commit(),
    'python': platform.python_version(),
    'packages': _versions(),
    'hostname': platform.node(),
    'platform': devices[0].platform,
    'device_kind': devices[0].device_kind,
    'device_count': jax.device_count(),
    'local_device_count': jax.local_device_count(),
    'process_count': jax.process_count(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def record_run_info(workdir: str) -> dict[str, Any]:
  """Appends this start's `collect_run_info()` to workdir/run_info.json (process 0)."""
  info = collect_run_info()
  if distributed.is_main_process():
    path = storage.workdir_path(workdir) / RUN_INFO_FILE
    starts = storage.read_json(path) if path.exists() else []
    storage.write_json(path, starts + [info], indent=2)
  return info
