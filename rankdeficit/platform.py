"""Backend defaults that must be in place before JAX initialises its backends.

`configure_cpu_defaults()` appends the project's XLA CPU flags to `XLA_FLAGS`, leaving any
flag the user already set untouched. Call it at program entry, before the first JAX
computation: XLA reads `XLA_FLAGS` once, when the first backend is created (importing `jax`
is fine, running anything is not).

What the defaults are, and why (jax/jaxlib 0.10.2, 2-core AVX-512 AMD EPYC, batch 128, fp32
train step; see tools/benchmark.py for the figures and how to rerun them):

* This jaxlib's XLA CPU already hands convolutions, dots and reductions to YNNPACK by default
  (`__ynn_fusion` custom fusions in the compiled HLO); convolutions it declines run on Eigen.
* `--xla_cpu_use_onednn`, `--xla_cpu_experimental_onednn_custom_call`,
  `--xla_cpu_use_xnnpack` and `--xla_cpu_experimental_xnn_graph_fusion_mode=GREEDY` compile to
  the same HLO as the default (no oneDNN/XNNPACK ops appear): they are no-ops in this build.
* `--xla_cpu_experimental_ynn_fusion_type` variations (off, or adding elementwise fusions)
  changed the compiled program but not the step time beyond the machine's noise.
* `--xla_cpu_enable_fast_math` changes numerics, and bfloat16 compute is a model choice
  (`config.model.dtype`), so neither is a default.

Hence `CPU_XLA_FLAGS` is deliberately short: it only pins what measurably matters and is
numerically neutral. It is a dict so that a future jaxlib's better setting is a one-line
change here, and so that `tools/benchmark.py --flags` can compare sets side by side.
"""
import logging
import os
import shlex
import sys

# flag name (without leading dashes) -> value. Numerically neutral settings only.
CPU_XLA_FLAGS: dict[str, str] = {}


def _backend_initialised() -> bool:
  """True if some JAX backend already exists (then XLA_FLAGS changes come too late)."""
  if 'jax' not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(getattr(xla_bridge, '_backends', None))
  except Exception:  # pragma: no cover - private API moved; assume we're early enough.
    return False


def _cpu_is_a_target() -> bool:
  """False when JAX_PLATFORMS restricts JAX to non-CPU platforms (the flags are moot)."""
  platforms = os.environ.get('JAX_PLATFORMS', '') or os.environ.get('JAX_PLATFORM_NAME', '')
  if not platforms:
    return True  # JAX always creates a CPU backend alongside any accelerator.
  return 'cpu' in [p.strip().lower() for p in platforms.split(',')]


def set_xla_flags(flags: dict[str, str], env=None) -> list[str]:
  """Appends `--name=value` for each flag not already present in `env['XLA_FLAGS']`.

  Returns the flags added (as strings). A flag the user set, with any value, wins.
  """
  env = os.environ if env is None else env
  current = shlex.split(env.get('XLA_FLAGS', ''))
  present = {f.lstrip('-').split('=', 1)[0] for f in current}
  added = [f'--{name}={value}' for name, value in flags.items() if name not in present]
  if added:
    env['XLA_FLAGS'] = ' '.join(current + added)
  return added


def configure_cpu_defaults(flags: dict[str, str] | None = None) -> list[str]:
  """Applies the project's XLA CPU defaults (`CPU_XLA_FLAGS`) unless the user overrides them.

  Args:
    flags: the flag set to apply; `CPU_XLA_FLAGS` if None.
  Returns:
    The `--flag=value` strings added to `XLA_FLAGS` (empty if none were needed, CPU is not a
    target, or JAX's backend was already initialised, which is logged as a warning).
  """
  flags = CPU_XLA_FLAGS if flags is None else flags
  if not flags or not _cpu_is_a_target():
    return []
  if _backend_initialised():
    logging.warning('configure_cpu_defaults() called after JAX initialised its backend; '
                    'XLA CPU defaults %s not applied.', flags)
    return []
  return set_xla_flags(flags)
