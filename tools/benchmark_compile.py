"""Compile time of the collapse monitor's program (rankdeficit/monitor.py), by phase.

  python -m tools.benchmark_compile --model=resnet20 --batch=512 [--input_ranks]

Builds `config.model` (configs/base.py defaults, 32x32x3 inputs, 10 classes), its
`monitor.make_collapse_metrics_fn` on `models.measurement_model(model)` (as train.py does)
and reports: trace + lowering, XLA backend compile (both from jax.monitoring's compile
events as well as wall time), the first and second call, the size of the compiled program
(HLO lines, LAPACK custom calls, while loops) and its most frequent HLO ops. Run it before
and after a monitor change on an idle machine; the 1-minute load average is printed.

PROVISIONAL (UNDER LOAD, load average 6-17 on 2 cores), ResNet-20, batch 128:
trace + lower 1-8 s, backend compile 10-43 s (scales with load), ~41,700 compiled HLO
lines with 126 while loops and ~4,000 threefry bit ops (xor/shift/or), almost all from the
per-layer `jax.random.choice(..., replace=False)` coordinate/row subsets (sort-based
shuffles) drawn inside the program. The same monitor with the subsets given as index
arrays instead: 14,900 HLO lines, no while loops, compile 10.4 s -> 6.0 s in one process
(load ~6). Grouping same-shape SVDs under vmap did not change compile time (2.8 s vs 2.8 s
for 19 ranks of 3 shapes): the SVD programs are not the cost. MLP 8x2048, batch 128
(load ~6): trace + lower 1.1 s, compile 1.6 s, 5,700 HLO lines, no while loops (2048
features < max_dims: no subsets drawn); its calls take ~4 minutes there (per-layer
2048x2048 SVD/eigh), so for the MLP the monitor's cost is run time, not compilation.
"""
import argparse
import collections
import functools
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

from configs import base
from rankdeficit import losses, models, monitor, optim, runtime, steps

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
  subsets = monitor.subset_indices(model, variables, images, key,
                                   max_dims=options['max_dims'],
                                   input_ranks=options['input_ranks'])
  return jax.jit(lambda v, x, y, t, s: body(
      v, x, y, temperature=t, subsets=lambda name, n, k: s[name])), (subsets,), (subsets,)


def monitor_program(model_name: str, batch: int, input_ranks: bool = False,
                    variant: str = 'constants', **model_fields):
  """(monitor fn, its arguments, the compiled program's) for `model_name`, random batch."""
  config = base.get_config()
  config.model.name = model_name
  for key, value in model_fields.items():
    config.model[key] = value
  model = models.create_model(config.model, num_classes=10)
  tx = optim.create_optimizer(config, steps_per_epoch=100)
  state = jax.jit(functools.partial(steps.create_train_state, model=model, tx=tx,
                                    image_shape=(32, 32, 3)))(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  variables = steps.model_variables(state)
  images = jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
  fn, rest, compiled_rest = _variant_fn(
      variant, models.measurement_model(model),
      lambda logits, labels, t: jnp.mean(losses.cross_entropy(logits, labels, t)),
      variables, images, jax.random.PRNGKey(1),
      max_dims=config.max_feature_dims, input_ranks=input_ranks)
  head = (variables, images, labels, 1.0)
  return fn, head + rest, head + compiled_rest


def measure(fn, args, call_args, calls: bool = True, compiler_options=None) -> dict:
  """Seconds per phase, compile events and compiled-program statistics (call times NaN
  when `calls` is False). `compiler_options`: XLA options for this compile only."""
  events = collections.defaultdict(float)
  monitoring.register_event_duration_secs_listener(
      lambda name, secs, **_: events.__setitem__(name, events[name] + secs))
  monitoring.register_event_listener(
      lambda name, **_: events.__setitem__(name, events[name] + 1))
  t0, c0 = time.perf_counter(), time.process_time()
  lowered = fn.lower(*args)
  t1, c1 = time.perf_counter(), time.process_time()
  compiled = lowered.compile(compiler_options)
  t2, c2 = time.perf_counter(), time.process_time()
  t3 = t4 = float('nan')
  if calls:
    jax.block_until_ready(compiled(*call_args))
    t3 = time.perf_counter()
    jax.block_until_ready(compiled(*call_args))
    t4 = time.perf_counter()
  hlo = compiled.as_text()
  return {'lower_s': t1 - t0, 'compile_s': t2 - t1, 'first_call_s': t3 - t2,
          'lower_cpu_s': c1 - c0, 'compile_cpu_s': c2 - c1,
          'second_call_s': t4 - t3, 'events': dict(events),
          'hlo_lines': hlo.count('\n'), 'custom_calls': hlo.count('custom-call('),
          'while_loops': hlo.count(' while('),
          'top_ops': collections.Counter(re.findall(r'= \S+ (\w[\w\-]*)\(', hlo)).most_common(12)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='resnet20')
  parser.add_argument('--batch', type=int, default=512, help='config.metrics_batch_size')
  parser.add_argument('--input_ranks', action='store_true')
  parser.add_argument('--variant', default='constants', choices=VARIANTS)
  parser.add_argument('--cache_dir', default='', help='config.compilation_cache_dir')
  parser.add_argument('--no_calls', action='store_true',
                      help='compile only (the MLP\'s calls take minutes on 2 cores)')
  parser.add_argument('--xla_options', default='',
                      help='name=value,... for the compile, e.g. xla_backend_optimization_level=0')
  args = parser.parse_args()
  options = dict(kv.split('=') for kv in args.xla_options.split(',') if kv) or None
  runtime.enable_compilation_cache(args.cache_dir)
  print(f'load average (1 min): {os.getloadavg()[0]:.2f}')
  result = measure(*monitor_program(args.model, args.batch, args.input_ranks, args.variant),
                   calls=not args.no_calls, compiler_options=options)
  print(f'{args.model} batch {args.batch} [{args.variant}]: trace+lower {result["lower_s"]:.1f} s, '
        f'backend compile {result["compile_s"]:.1f} s, first call {result["first_call_s"]:.1f} s, '
        f'second call {result["second_call_s"]:.1f} s; load after {os.getloadavg()[0]:.2f}')
  print(f'  CPU time of this process (all threads; less load-dependent than wall time): '
        f'trace+lower {result["lower_cpu_s"]:.1f} s, backend compile {result["compile_cpu_s"]:.1f} s')
  for name, secs in sorted(result['events'].items(), key=lambda kv: -kv[1])[:4]:
    print(f'  {name}: {secs:.2f} s')
  cache = {k: v for k, v in result['events'].items() if 'compilation_cache' in k}
  if cache:
    print(f'  persistent cache events: {cache}')
  print(f'  compiled HLO: {result["hlo_lines"]} lines, {result["custom_calls"]} custom calls, '
        f'{result["while_loops"]} while loops; top ops {result["top_ops"]}')


if __name__ == '__main__':
  main()
