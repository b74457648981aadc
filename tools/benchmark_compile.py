"""Compile time of the collapse monitor's program (rankdeficit/training/monitor.py), by phase.

  python -m tools.benchmark_compile --model=resnet20 --batch=128 [--input_ranks]
      [--variant=constants|arguments|in_program] [--no_calls] [--cache_dir=DIR]
      [--xla_options=name=value,...]

Builds `config.model` (configs/base.py defaults, 32x32x3 inputs, 10 classes), its monitor
on `models.measurement_model(model)` (as train.py does) and reports: trace + lowering, XLA
backend compile (wall time and this process's CPU time, which depends far less on the
machine's load), the first and second call, the size of the compiled program (HLO lines,
custom calls, while loops), its most frequent HLO ops and persistent-cache events.
Variants: `constants` = the shipped monitor (subsets drawn with numpy on the host and
compiled in); `arguments` = the same subsets passed as index-array arguments;
`in_program` = subsets drawn inside the program with `jax.random.choice` (the monitor up
to commit 4163d3d; run it on that tree via PYTHONPATH for the true "before").

Measured 2026-11-29, 2-core shared machine UNDER LOAD (1-min load average 8-11 throughout:
wall times vary 3x run to run; compare CPU times), ResNet-20, batch 128, seconds, one
value per run:

monitor                          HLO lines  while  trace+lower CPU  compile CPU   compile wall
before: in-program (4163d3d)       48,821    126    4.6              64.6          54.6, 165.3
host subsets as arguments          21,944      0    3.4 (+ a trace)  26.4          58.6, 54.6
host subsets as constants          20,081      0    2.8, 1.8, 2.9    22.0, 17.0,   44.2, 34.7,
                                                                     19.6          40.9
constants + CPU_COMPILER_OPTIONS   20,081      0    2.3, 3.7, 1.9    8.8, 9.4, 7.4  19.6, 14.3,
  (= shipped; 3rd run: the default                                                  15.1
  make_collapse_metrics_fn)
constants, 2nd process + cache     (hit)              2.3              0.6           1.3 (31.7 s
saved)

Before -> shipped: backend compile CPU 64.6 s -> 7.4-9.4 s (7-9x), trace+lower 4.6 -> 2-4 s;
with `config.compilation_cache_dir` a restarted run loads the monitor in ~1 s (its key
is stable: the subsets are the same constants in every process). Call time (CPU, two
calls): constants 14.4 / 22.1 s, with the options 17.5 / 15.1 s: within the noise.
MLP 8x2048, batch 128 (no subsets: 2048 features <= max_dims, 128 rows <= 4096): 8,058
HLO lines before and 8,068 after (without the options), compile 11.1 s / 10.0 s wall
(3.5 s CPU) at load 10; its calls take minutes (2048x2048 SVD/eigh per layer): run time,
not compilation.

Where the rest goes (constants, before the options; CPU): forward + backward alone 5.7 s
(4,843 lines); the 11 representation spectra 3.0 s (one: 0.7 s); the 20 layers' conv
patches, alignment eigh and gradient ranks the rest. Tried and dropped: per-layer programs
reused across same-shape layers (one forward/backward program, then 4 spectrum and 8
layer programs jitted per shape): 90.6 s backend compile wall against ~40 s monolithic,
many small programs each pay XLA's fixed cost; grouping same-shape SVDs under vmap did
not change compile time either (earlier prototype).
"""

import argparse
import collections
import functools
import os
import re
import time

import jax
from jax import monitoring
import jax.numpy as jnp
import numpy as np

from configs import base
from rankdeficit import models
from rankdeficit.run import runtime
from rankdeficit.training import losses
from rankdeficit.training import monitor
from rankdeficit.training import optim
from rankdeficit.training import steps

VARIANTS = ('constants', 'arguments', 'in_program')


def _variant_fn(variant: str, model, loss_fn, variables, images, key, **options):
  """(fn with .lower, its arguments after (variables, images, labels, temperature), those
  of the compiled executable).

  constants: the shipped monitor (numpy subsets compiled in as constants);
  arguments: the same numpy subsets passed as index-array arguments;
  in_program: subsets drawn inside the program from `key` (what the monitor did before).
  """
  if variant == 'constants':
    return monitor.make_collapse_metrics_fn(model, loss_fn, **options), (key,), ()
  body = functools.partial(monitor.collapse_metrics, model, loss_fn=loss_fn, **options)
  if variant == 'in_program':
    return jax.jit(lambda v, x, y, t, k: body(v, x, y, temperature=t, key=k)), (key,), (key,)
  subsets = monitor.subset_indices(
    model, variables, images, key, max_dims=options['max_dims'], input_ranks=options['input_ranks']
  )
  return (
    jax.jit(lambda v, x, y, t, s: body(v, x, y, temperature=t, subsets=lambda name, n, k: s[name])),
    (subsets,),
    (subsets,),
  )


def monitor_program(
  model_name: str, batch: int, input_ranks: bool = False, variant: str = 'constants', **model_fields
):
  """(monitor fn, its arguments, the compiled program's) for `model_name`, random batch."""
  config = base.get_config()
  config.model.name = model_name
  for key, value in model_fields.items():
    config.model[key] = value
  model = models.create_model(config.model, num_classes=10)
  tx = optim.create_optimizer(config, steps_per_epoch=100)
  state = jax.jit(
    functools.partial(steps.create_train_state, model=model, tx=tx, image_shape=(32, 32, 3))
  )(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  variables = steps.model_variables(state)
  images = jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
  fn, rest, compiled_rest = _variant_fn(
    variant,
    models.measurement_model(model),
    lambda logits, labels, t: jnp.mean(losses.cross_entropy(logits, labels, t)),
    variables,
    images,
    jax.random.PRNGKey(1),
    max_dims=config.max_feature_dims,
    input_ranks=input_ranks,
  )
  head = (variables, images, labels, 1.0)
  return fn, head + rest, head + compiled_rest


def measure(fn, args, call_args, calls: bool = True, compiler_options=None) -> dict:
  """Seconds per phase, compile events and compiled-program statistics (call times NaN
  when `calls` is False). `compiler_options`: XLA options for this compile only."""
  events = collections.defaultdict(float)
  monitoring.register_event_duration_secs_listener(
    lambda name, secs, **_: events.__setitem__(name, events[name] + secs)
  )
  monitoring.register_event_listener(lambda name, **_: events.__setitem__(name, events[name] + 1))
  t0, c0 = time.perf_counter(), time.process_time()
  lowered = fn.lower(*args)
  t1, c1 = time.perf_counter(), time.process_time()
  compiled = lowered.compile(compiler_options)
  t2, c2 = time.perf_counter(), time.process_time()
  t3 = t4 = c3 = c4 = float('nan')
  if calls:
    jax.block_until_ready(compiled(*call_args))
    t3, c3 = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*call_args))
    t4, c4 = time.perf_counter(), time.process_time()
  hlo = compiled.as_text()
  return {
    'lower_s': t1 - t0,
    'compile_s': t2 - t1,
    'first_call_s': t3 - t2,
    'lower_cpu_s': c1 - c0,
    'compile_cpu_s': c2 - c1,
    'first_call_cpu_s': c3 - c2,
    'second_call_cpu_s': c4 - c3,
    'second_call_s': t4 - t3,
    'events': dict(events),
    'hlo_lines': hlo.count('\n'),
    'custom_calls': hlo.count('custom-call('),
    'while_loops': hlo.count(' while('),
    'top_ops': collections.Counter(re.findall(r'= \S+ (\w[\w\-]*)\(', hlo)).most_common(12),
  }


def _option_value(text: str):
  """'true'/'false' -> bool, digits -> int, else the string (XLA option values)."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  return int(text) if text.lstrip('-').isdigit() else text


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='resnet20')
  parser.add_argument('--batch', type=int, default=512, help='config.metrics_batch_size')
  parser.add_argument('--input_ranks', action='store_true')
  parser.add_argument('--variant', default='constants', choices=VARIANTS)
  parser.add_argument('--cache_dir', default='', help='config.compilation_cache_dir')
  parser.add_argument(
    '--no_calls', action='store_true', help="compile only (the MLP's calls take minutes on 2 cores)"
  )
  parser.add_argument(
    '--xla_options',
    default='',
    help='name=value,... for the compile, e.g. xla_backend_optimization_level=0',
  )
  args = parser.parse_args()
  options = {
    name: _option_value(value)
    for name, value in (kv.split('=') for kv in args.xla_options.split(',') if kv)
  } or None
  runtime.enable_compilation_cache(args.cache_dir)
  print(f'load average (1 min): {os.getloadavg()[0]:.2f}')
  result = measure(
    *monitor_program(args.model, args.batch, args.input_ranks, args.variant),
    calls=not args.no_calls,
    compiler_options=options,
  )
  print(
    f'{args.model} batch {args.batch} [{args.variant}]: trace+lower {result["lower_s"]:.1f} s, '
    f'backend compile {result["compile_s"]:.1f} s, first call {result["first_call_s"]:.1f} s, '
    f'second call {result["second_call_s"]:.1f} s; load after {os.getloadavg()[0]:.2f}'
  )
  print(
    f'  CPU time of this process (all threads; less load-dependent than wall time): '
    f'trace+lower {result["lower_cpu_s"]:.1f} s, '
    f'backend compile {result["compile_cpu_s"]:.1f} s, '
    f'calls {result["first_call_cpu_s"]:.1f} s, {result["second_call_cpu_s"]:.1f} s'
  )
  for name, secs in sorted(result['events'].items(), key=lambda kv: -kv[1])[:4]:
    print(f'  {name}: {secs:.2f} s')
  cache = {k: v for k, v in result['events'].items() if 'compilation_cache' in k}
  if cache:
    print(f'  persistent cache events: {cache}')
  print(
    f'  compiled HLO: {result["hlo_lines"]} lines, {result["custom_calls"]} custom calls, '
    f'{result["while_loops"]} while loops; top ops {result["top_ops"]}'
  )


if __name__ == '__main__':
  main()
