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
from rankdeficit import losses, models, monitor, optim, steps


def monitor_program(model_name: str, batch: int, input_ranks: bool = False, **model_fields):
  """(jitted monitor fn, its arguments) for `model_name` on a random batch."""
  config = base.get_config()
  config.model.name = model_name
  for key, value in model_fields.items():
    config.model[key] = value
  model = models.create_model(config.model, num_classes=10)
  tx = optim.create_optimizer(config, steps_per_epoch=100)
  state = jax.jit(functools.partial(steps.create_train_state, model=model, tx=tx,
                                    image_shape=(32, 32, 3)))(jax.random.PRNGKey(0))
  fn = monitor.make_collapse_metrics_fn(
      models.measurement_model(model),
      lambda logits, labels, t: jnp.mean(losses.cross_entropy(logits, labels, t)),
      max_dims=config.max_feature_dims, input_ranks=input_ranks)
  rng = np.random.default_rng(0)
  args = (steps.model_variables(state),
          jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32),
          jnp.asarray(rng.integers(0, 10, batch), jnp.int32), 1.0, jax.random.PRNGKey(1))
  return fn, args


def measure(fn, args) -> dict:
  """Seconds per phase, compile events and compiled-program statistics."""
  events = collections.defaultdict(float)
  monitoring.register_event_duration_secs_listener(
      lambda name, secs, **_: events.__setitem__(name, events[name] + secs))
  t0 = time.perf_counter()
  lowered = fn.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  t3 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  t4 = time.perf_counter()
  hlo = compiled.as_text()
  return {'lower_s': t1 - t0, 'compile_s': t2 - t1, 'first_call_s': t3 - t2,
          'second_call_s': t4 - t3, 'events': dict(events),
          'hlo_lines': hlo.count('\n'), 'custom_calls': hlo.count('custom-call('),
          'while_loops': hlo.count(' while('),
          'top_ops': collections.Counter(re.findall(r'= \S+ (\w[\w\-]*)\(', hlo)).most_common(12)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='resnet20')
  parser.add_argument('--batch', type=int, default=512, help='config.metrics_batch_size')
  parser.add_argument('--input_ranks', action='store_true')
  args = parser.parse_args()
  print(f'load average (1 min): {os.getloadavg()[0]:.2f}')
  result = measure(*monitor_program(args.model, args.batch, args.input_ranks))
  print(f'{args.model} batch {args.batch}: trace+lower {result["lower_s"]:.1f} s, '
        f'backend compile {result["compile_s"]:.1f} s, first call {result["first_call_s"]:.1f} s, '
        f'second call {result["second_call_s"]:.1f} s')
  for name, secs in sorted(result['events'].items(), key=lambda kv: -kv[1])[:4]:
    print(f'  {name}: {secs:.2f} s')
  print(f'  compiled HLO: {result["hlo_lines"]} lines, {result["custom_calls"]} custom calls, '
        f'{result["while_loops"]} while loops; top ops {result["top_ops"]}')


if __name__ == '__main__':
  main()
