"""Train-step throughput of our jitted step, side by side with the PyTorch yardstick.

  python -m tools.benchmark --models=mlp,resnet20,resnet18,vgg19 --batch=128 \
      --torch_ref=../shared/bench/torch_ref.py

For each model it times our jitted train step (temperature-scaled CE at T=100, SGD with
momentum 0.9 and weight decay 1e-4, as torch_ref.py does) on random 32x32x3 batches after
compilation, then runs `torch_ref.py MODEL BATCH STEPS` in a subprocess on the same machine
and prints both figures and their ratio. The model names follow torch_ref.py ('vgg19' there
is VGG-19 with BatchNorm, our 'vgg19_bn'). `--repeats=R` times R blocks of `--steps` steps
and reports medians (JAX and PyTorch alternate per block), which matters on a shared CPU.

No XLA CPU flag is set by the project: none measurably and safely helped (below). To compare
XLA flag sets, give `--flags` a ';'-separated
list of NAME=FLAGS entries; each runs in its own process (XLA reads XLA_FLAGS once) and the
table gains a column per set, plus each set's loss after the first three steps (to check
that a set leaves the numerics unchanged):

  python -m tools.benchmark --models=resnet20 --steps=3 --repeats=3 --flags=\
'default=;ynn_off=--xla_cpu_experimental_ynn_fusion_type=;onednn=--xla_cpu_use_onednn=true'

What was tried (jax/jaxlib 0.10.2, 2-core AVX-512 AMD EPYC; PyTorch 2.13 CPU eager, oneDNN/MKL,
2 OpenMP threads). Measured on the IDLE machine, back to back, medians of 3 (batch 128, fp32):

  | model    | jax ms/step | torch ms/step | jax/torch speed |
  | mlp      | 184         | 232           | 1.26x           |
  | resnet20 | 617         | 272           | 0.44x           |
  | resnet18 | 4838        | 2963          | 0.61x           |
  | vgg19    | 2718        | 1720          | 0.63x           |

  On CPU the convnets are still ~1.6-2.3x slower than PyTorch's oneDNN kernels; the target is
  not met there (it is on GPU: 2.0-4.1x faster than torch_ref on an H200, batch 128). Earlier
  measurements taken while other jobs loaded the machine (load 6-11) showed JAX ahead for
  every model: PyTorch's OpenMP threads suffer far more from contention, so only idle,
  back-to-back figures count.

  * This jaxlib's XLA CPU already hands most convs, the dots and BatchNorm reductions to
    YNNPACK (`__ynn_fusion` in the compiled HLO; 45 of resnet20's 62 convs).
  * --xla_cpu_use_onednn=true, --xla_cpu_experimental_onednn_custom_call=true,
    --xla_cpu_use_xnnpack=true, --xla_cpu_experimental_xnn_graph_fusion_mode=
    XNN_GRAPH_FUSION_MODE_GREEDY: compiled HLO identical to the default's: no-ops here.
  * --xla_cpu_experimental_ynn_fusion_type: '' (YNNPACK off) and 'individual_dot,dot,reduce'
    (convs on Eigen) vs default, idle, each in its own process, median ms for resnet20:
    default 597, YNNPACK off 543, convs on Eigen 538 (same losses to 1e-7): ~10%, far from
    the 2x gap, and not made a default without measurements on other CPUs.
  * bfloat16 compute (--dtype): slower on this CPU (mlp 1785 vs ~900 ms) and changes
    numerics; --xla_cpu_enable_fast_math changes numerics: neither is a default.
  * The worst gap was VGG-19's last stage: XLA CPU runs a 3x3 conv on a 2x2 map at ~0.3
    GFLOP/s (7.9 s forward for one 512->512 layer, vs 0.33 s on a 4x4 map). vgg.py now
    passes rankdeficit/models/small_conv.py's im2col+dot conv to nn.Conv for maps of <= 4
    pixels: that layer 7.9 s -> 61 ms forward, 225 ms forward+backward (under load); the
    vgg19 step became ~3x faster; loss after 3 steps 2.2634675 -> 2.2634645 (summation order).
  * Step metrics (optax.global_norm etc.) and flax BatchNorm are fused elementwise/reduction
    work, far below what this machine's noise can resolve; left as they are.
"""
import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from rankdeficit import losses, models, optim, steps

# torch_ref.py name -> our model name.
TORCH_NAMES = {'mlp': 'mlp', 'resnet18': 'resnet18', 'resnet20': 'resnet20',
               'resnet34': 'resnet34', 'vgg19': 'vgg19_bn'}


class JaxStep:
  """Our jitted train step on one model and a fixed random batch, compiled and warmed up."""

  def __init__(self, name: str, batch: int, dtype: str = 'float32', warmup: int = 3):
    config = base.get_config()
    config.model.name = TORCH_NAMES[name]
    config.model.dtype = dtype
    config.lr_milestones = ()
    model = models.create_model(config.model, num_classes=10)
    tx = optim.create_optimizer(config, steps_per_epoch=100)
    self.state = jax.jit(functools.partial(steps.create_train_state, model=model, tx=tx,
                                           image_shape=(32, 32, 3)))(jax.random.PRNGKey(0))
    self.step = jax.jit(functools.partial(
        steps.train_step, model=model, tx=tx, loss_fn=losses.cross_entropy,
        temperature_fn=lambda _: 100.0), donate_argnums=0)
    rng = np.random.default_rng(0)
    self.data = {'image': jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32),
                 'label': jnp.asarray(rng.integers(0, 10, batch), jnp.int32)}
    self.losses = []  # loss of the first `warmup` steps, to compare numerics across settings
    for _ in range(warmup):
      self.state, metrics = self.step(self.state, self.data)
      self.losses.append(float(metrics['loss']))

  def time(self, num_steps: int) -> float:
    """Seconds per step over `num_steps` steps."""
    start = time.perf_counter()
    for _ in range(num_steps):
      self.state, metrics = self.step(self.state, self.data)
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) / num_steps


def time_jax_step(name: str, batch: int, num_steps: int, dtype: str = 'float32',
                  warmup: int = 3) -> float:
  """Seconds per train step of our jitted step on the default device."""
  return JaxStep(name, batch, dtype, warmup).time(num_steps)


def time_torch_step(torch_ref: str, name: str, batch: int, num_steps: int) -> float | None:
  """Seconds per step reported by torch_ref.py, or None if it cannot run here."""
  out = subprocess.run([sys.executable, torch_ref, name, str(batch), str(num_steps)],
                       capture_output=True, text=True, check=False)
  # img/s is printed from the unrounded step time; ms/step is rounded to 0.1 ms.
  match = re.search(r'img/s=([\d.]+)', out.stdout)
  if not match:
    print(f'  torch_ref failed for {name}: {out.stderr.strip()[-300:]}', file=sys.stderr)
    return None
  return batch / float(match.group(1))


def _parse_flag_sets(spec: str) -> dict[str, str]:
  """'a=--f=1 --g=2;b=' -> {'a': '--f=1 --g=2', 'b': ''} (split at the first '=')."""
  sets = {}
  for entry in filter(None, (e.strip() for e in spec.split(';'))):
    name, _, flags = entry.partition('=')
    sets[name] = flags
  return sets


def _jax_in_subprocess(flags: str, name: str, args) -> dict:
  """Runs `--_worker` in a fresh process under XLA_FLAGS=flags; returns its JSON line."""
  env = dict(os.environ, XLA_FLAGS=flags)
  cmd = [sys.executable, '-m', 'tools.benchmark', '--_worker', f'--models={name}',
         f'--batch={args.batch}', f'--steps={args.steps}', f'--repeats={args.repeats}',
         f'--dtype={args.dtype}']
  out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
  if out.returncode or not lines:
    print(f'  flags {flags!r} failed for {name}: {out.stderr.strip()[-300:]}', file=sys.stderr)
    return {}
  return json.loads(lines[-1])


def _worker(args):
  """Times one model in this process and prints one JSON line (for --flags)."""
  for name in args.models.split(','):
    bench = JaxStep(name, args.batch, args.dtype)
    times = [bench.time(args.steps) for _ in range(args.repeats)]
    print(json.dumps({'model': name, 'seconds': statistics.median(times), 'all': times,
                      'losses': bench.losses, 'xla_flags': os.environ.get('XLA_FLAGS', '')}),
          flush=True)


def _compare_flags(args, torch_ok: bool):
  """Table of img/s per flag set (each in its own process) and PyTorch, with the losses."""
  sets = _parse_flag_sets(args.flags)
  print(f'flag sets: {sets}')
  print('| model | ' + ' | '.join(f'{k} img/s' for k in sets) + ' | torch img/s | best/torch |')
  print('|---|' + '---|' * (len(sets) + 2))
  for name in args.models.split(','):
    results = {k: _jax_in_subprocess(v, name, args) for k, v in sets.items()}
    torch_times = ([time_torch_step(args.torch_ref, name, args.batch, args.steps)
                    for _ in range(args.repeats)] if torch_ok else [])
    torch_times = [t for t in torch_times if t]
    torch_s = statistics.median(torch_times) if torch_times else None
    ips = {k: args.batch / r['seconds'] for k, r in results.items() if r}
    cells = [f'{ips[k]:.1f}' if k in ips else 'failed' for k in sets]
    best = max(ips.values()) if ips else None
    ratio = f'{best * torch_s / args.batch:.2f}x' if best and torch_s else '-'
    t_ips = f'{args.batch / torch_s:.1f}' if torch_s else '-'
    print(f'| {name} | ' + ' | '.join(cells) + f' | {t_ips} | {ratio} |', flush=True)
    for k, r in results.items():
      if r:
        print(f'    {k}: ms/step {[round(t * 1e3, 1) for t in r["all"]]}, '
              f'losses {r["losses"]}', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='mlp,resnet20,resnet18,vgg19')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=1,
                      help='timed blocks of --steps steps per model (medians are reported)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--torch_ref', default=os.path.join('..', 'shared', 'bench', 'torch_ref.py'),
                      help="path to torch_ref.py ('' to skip PyTorch)")
  parser.add_argument('--flags', default='',
                      help="';'-separated NAME=XLA_FLAGS sets to compare, e.g. "
                           "'default=;ynn_off=--xla_cpu_experimental_ynn_fusion_type='")
  parser.add_argument('--_worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._worker:  # pylint: disable=protected-access
    return _worker(args)
  torch_ok = bool(args.torch_ref) and os.path.exists(args.torch_ref)
  if args.flags:
    return _compare_flags(args, torch_ok)
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  print('| model | batch | jax img/s | jax ms/step | torch img/s | torch ms/step | jax/torch |')
  print('|---|---|---|---|---|---|---|')
  for name in args.models.split(','):
    bench = JaxStep(name, args.batch, args.dtype)
    jax_times, torch_times = [], []
    for _ in range(args.repeats):  # alternate, so that load changes hit both alike
      jax_times.append(bench.time(args.steps))
      if torch_ok:
        torch_times.append(time_torch_step(args.torch_ref, name, args.batch, args.steps))
    jax_s = statistics.median(jax_times)
    torch_times = [t for t in torch_times if t]
    torch_s = statistics.median(torch_times) if torch_times else None
    t_ips = f'{args.batch / torch_s:.1f}' if torch_s else '-'
    t_ms = f'{torch_s * 1e3:.1f}' if torch_s else '-'
    ratio = f'{torch_s / jax_s:.2f}x' if torch_s else '-'
    print(f'| {name} | {args.batch} | {args.batch / jax_s:.1f} | {jax_s * 1e3:.1f} | '
          f'{t_ips} | {t_ms} | {ratio} |', flush=True)


if __name__ == '__main__':
  main()
