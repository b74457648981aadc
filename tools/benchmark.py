"""Train-step throughput of our jitted step, side by side with the PyTorch yardstick.

  python -m tools.benchmark --models=mlp,resnet20,resnet18,vgg19 --batch=128 \
      --torch_ref=../shared/bench/torch_ref.py --torch_modes=eager,compile,compile_bf16

For each model it times our jitted train step (temperature-scaled CE at T=100, SGD with
momentum 0.9 and weight decay 1e-4, as torch_ref.py does) on random 32x32x3 batches after
compilation, then runs `torch_ref.py MODEL BATCH STEPS MODE` in a subprocess on the same
machine for each of `--torch_modes` (eager | compile | compile_bf16, see torch_ref.py) and
prints one ms/step column per mode and our speed relative to the best mode. The model names
follow torch_ref.py ('vgg19' there is VGG-19 with BatchNorm, our 'vgg19_bn'). `--repeats=R`
(default 3) times R blocks of `--steps` steps and reports medians (JAX and each PyTorch mode
alternate per block). The 1-minute load average is printed first, with a warning above 0.5:
only figures from an idle machine count. `--conv_impl` selects config.model.conv_impl
(rankdeficit/models/cpu_conv.py; 'auto' = per-shape choice on CPU, XLA's conv elsewhere).
`--peak_tflops=P` adds each step's FLOPs (XLA's cost analysis of the compiled step), the
TFLOP/s reached and the MFU against P (e.g. `--dtype=bfloat16 --peak_tflops=989` on an H200).

PyTorch is a benchmark-only dependency, not a project one: install it into the venv from
PyPI (`pip install torch`, the CPU wheel on a machine without CUDA) to run the comparison.

The project's programs (and this benchmark's own step) run with `runtime.XLA_CPU_FLAGS`
(rankdeficit/run/runtime.py: convolutions on XLA's Eigen kernels instead of YNNPACK). To
compare XLA flag sets, give `--flags` a ';'-separated list of NAME=FLAGS entries; each runs
in its own process with XLA_FLAGS exactly as given (`default=` is jaxlib's own default) and
the table gains a column per set, plus each set's loss after the first three steps (to check
that a set leaves the numerics unchanged):

  python -m tools.benchmark --models=resnet20 --steps=3 --repeats=3 --flags=\
'default=;ynn_off=--xla_cpu_experimental_ynn_fusion_type=;onednn=--xla_cpu_use_onednn=true'

All three PyTorch modes, side by side in one run (2026-11-29; PyTorch 2.13.0+cpu, jaxlib
0.10.2, 2-vCPU Intel Xeon with AVX-512 and AMX-BF16, conv_impl=auto, batch 128, fp32 JAX, medians
of 3 blocks x 5 steps; machine idle
apart from the run itself and a stopped job, 1-min load 1.5-1.9 = the benchmark's own 2
threads). Two runs back to back, ms/step:

  | model    | jax (fp32)  | torch eager | torch compile | torch compile_bf16 | jax/best   |
  | mlp      | 218 / 249   | 262 / 261   | 228 / 368     | 188 / 184          | 0.86/0.74x |
  | resnet20 | 896 / 740   | 1352 / 365  | 397 / 284     | 167 / 183          | 0.19/0.25x |
  | resnet18 | 5962        | 2795        | 2246          | 1153               | 0.19x      |
  | vgg19    | 2766        | 1758        | 2019          | 1047               | 0.38x      |

  The target (>= the best torch mode on every model) is NOT met on this CPU. The best mode
  is always compile_bf16: bf16 convs and matmuls on this CPU's AMX tiles through oneDNN,
  which XLA CPU does not use (our bf16 path is slower than fp32 here, below). Against torch
  in fp32 (compile), the MLP is level or ahead (1.05-1.5x) and the convnets are 0.38-0.73x. Where
  the fp32 gap is, per conv shape and pass, is `python -m tools.benchmark_conv
  --formulations=xla,im2col,torch,torch_bf16` (tools/benchmark_conv.py): the kernel
  gradient (dw) of 3x3 convs is 2.5-5x slower in XLA than in oneDNN fp32, forward and
  input gradient 1-1.4x; bf16 oneDNN is another 3-6x faster on every pass. Run-to-run noise
  at 5 steps is large (resnet20 eager 1352 vs 365 ms: the first PyTorch process after
  installation pays oneDNN's primitive cache warm-up), hence both runs.

The project's XLA CPU flags (2026-12-05; jaxlib 0.10.2, 2-core AMD EPYC with AVX2 and no
AVX-512, idle, batch 128, fp32, medians of 3 blocks x 3 steps, each set in its own process;
`--flags='noconv=--xla_cpu_experimental_ynn_fusion_type=individual_dot,dot,reduce;ynn_off=
--xla_cpu_experimental_ynn_fusion_type=;default='`), ms/step:

  | model    | default (jaxlib) | YNNPACK off | convs off YNNPACK (project) |
  | mlp      | 271              | 464         | 251                         |
  | resnet20 | 1057             | 649         | 663                         |
  | vgg19    | 4800             | 2695        | 2427                        |
  | resnet18 | 10941 (run 1)    | 4439 (run 1)| -                           |

  YNNPACK's convolutions are what is slow on this CPU (1.6-2.4x); its dots are faster than
  Eigen's (the MLP loses 1.7x with YNNPACK off). Losses after 3 steps agree to 1e-7. On the
  AVX-512 machine below the same choice was ~10% faster for resnet20 (597 -> 538 ms). Hence
  the default, for jaxlib 0.10 (`runtime.XLA_CPU_FLAGS_JAXLIB`); a user's own value of the
  flag in XLA_FLAGS is kept.

Earlier: What was tried (jax/jaxlib 0.10.2, 2-core AVX-512 AMD EPYC; PyTorch 2.13 CPU eager,
oneDNN/MKL,
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
    the 2x gap here; made the default once an AVX2 CPU measured 1.6x (above).
  * bfloat16 compute (--dtype): slower on this CPU (mlp 1785 vs ~900 ms) and changes
    numerics; --xla_cpu_enable_fast_math changes numerics: neither is a default.
  * The worst gap was VGG-19's last stage: XLA CPU runs a 3x3 conv on a 2x2 map at ~0.3
    GFLOP/s (7.9 s forward for one 512->512 layer, vs 0.33 s on a 4x4 map). im2col+dot for
    maps of <= 4 pixels: that layer 7.9 s -> 61 ms forward, 225 ms forward+backward (under
    load); the vgg19 step became ~3x faster; loss after 3 steps 2.2634675 -> 2.2634645.
  * Per conv shape and pass (tools/benchmark_conv.py: forward, input gradient dx, kernel
    gradient dw; XLA NHWC, XLA NCHW dimension numbers, im2col + dot, per-tap dots, per-tap
    dots in an HWNC layout), measured UNDER LOAD (load 14-17 on 2 cores), interleaved,
    medians of 3: XLA's conv wins every 3x3 pass on maps of >= 8x8 except marginal cases
    within noise; the kernel gradient dw of 3x3 convs is the dominant cost (ResNet-20 at
    batch 128: dw ~1.2-1.9 s of ~2.0-2.7 s conv time under load, 4-5x its forward at equal
    FLOPs), and no formulation tried beats it. im2col wins on 2x2 maps (all passes, ~100x),
    on 4x4 maps (fwd and dx, ~1.3-2x at 256-512 channels) and for the gradients of strided
    1x1 projection convs (~3-4x). config.model.conv_impl='auto' (the default) applies that
    table on CPU (rankdeficit/models/cpu_conv.py `pick`, with a custom_vjp choosing per
    pass) and XLA's conv on GPU/TPU.
  * Step metrics (optax.tree.norm etc.) and flax BatchNorm are fused elementwise/reduction
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
from rankdeficit import models
from rankdeficit.run import runtime
from rankdeficit.training import losses
from rankdeficit.training import optim
from rankdeficit.training import steps

# torch_ref.py name -> our model name.
TORCH_NAMES = {
  'mlp': 'mlp',
  'resnet18': 'resnet18',
  'resnet20': 'resnet20',
  'resnet34': 'resnet34',
  'vgg19': 'vgg19_bn',
}


class JaxStep:
  """Our jitted train step on one model and a fixed random batch, compiled and warmed up."""

  def __init__(
    self, name: str, batch: int, dtype: str = 'float32', warmup: int = 3, conv_impl: str = 'auto'
  ):
    config = base.get_config()
    config.model.name = TORCH_NAMES[name]
    config.model.dtype = dtype
    config.model.conv_impl = conv_impl
    config.lr_milestones = ()
    model = models.create_model(config.model, num_classes=10)
    tx = optim.create_optimizer(config, steps_per_epoch=100)
    self.state = jax.jit(
      functools.partial(steps.create_train_state, model=model, tx=tx, image_shape=(32, 32, 3))
    )(jax.random.PRNGKey(0))
    self.step = jax.jit(
      functools.partial(
        steps.train_step,
        model=model,
        tx=tx,
        loss_fn=losses.cross_entropy,
        temperature_fn=lambda _: 100.0,
      ),
      donate_argnums=0,
    )
    rng = np.random.default_rng(0)
    self.data = {
      'image': jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, 10, batch), jnp.int32),
    }
    self.losses = []  # loss of the first `warmup` steps, to compare numerics across settings
    for _ in range(warmup):
      self.state, metrics = self.step(self.state, self.data)
      self.losses.append(float(metrics['loss']))

  def flops(self) -> float | None:
    """FLOPs of one compiled step by XLA's cost analysis (None where the backend gives none)."""
    cost = self.step.lower(self.state, self.data).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per module
    return float(cost['flops']) if cost and cost.get('flops') else None

  def time(self, num_steps: int) -> float:
    """Seconds per step over `num_steps` steps."""
    start = time.perf_counter()
    for _ in range(num_steps):
      self.state, metrics = self.step(self.state, self.data)
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) / num_steps


def time_torch_step(
  torch_ref: str, name: str, batch: int, num_steps: int, mode: str = 'eager'
) -> float | None:
  """Seconds per step reported by `torch_ref.py` in `mode`, or None if it cannot run here."""
  out = subprocess.run(
    [sys.executable, torch_ref, name, str(batch), str(num_steps), mode],
    capture_output=True,
    text=True,
    check=False,
  )
  # img/s is printed from the unrounded step time; ms/step is rounded to 0.1 ms.
  match = re.search(r'img/s=([\d.]+)', out.stdout)
  if not match:
    print(f'  torch_ref failed for {name} ({mode}): {out.stderr.strip()[-300:]}', file=sys.stderr)
    return None
  return batch / float(match.group(1))


def report_load(threshold: float = 0.5) -> float:
  """Prints the 1-minute load average (with a warning above `threshold`) and returns it."""
  load = os.getloadavg()[0]
  print(f'load average (1 min): {load:.2f} on {os.cpu_count()} CPUs')
  if load > threshold:
    print(
      f'WARNING: load {load:.2f} > {threshold}: the machine is busy; these timings are '
      "not valid for claims (PyTorch's OpenMP threads suffer more from contention).",
      flush=True,
    )
  return load


def torch_medians(args, name: str, modes) -> dict[str, float | None]:
  """{mode: median seconds per step of torch_ref.py over --repeats runs} (None: failed)."""
  out = {}
  for mode in modes:
    times = [
      time_torch_step(args.torch_ref, name, args.batch, args.steps, mode)
      for _ in range(args.repeats)
    ]
    times = [t for t in times if t]
    out[mode] = statistics.median(times) if times else None
  return out


def _best(times: dict[str, float | None]) -> tuple[str | None, float | None]:
  ok = {k: v for k, v in times.items() if v}
  if not ok:
    return None, None
  mode = min(ok, key=ok.get)
  return mode, ok[mode]


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
  cmd = [
    sys.executable,
    '-m',
    'tools.benchmark',
    '--_worker',
    f'--models={name}',
    f'--batch={args.batch}',
    f'--steps={args.steps}',
    f'--repeats={args.repeats}',
    f'--dtype={args.dtype}',
    f'--conv_impl={args.conv_impl}',
  ]
  out = subprocess.run(
    cmd,
    capture_output=True,
    text=True,
    check=False,
    env=env,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
  if out.returncode or not lines:
    print(f'  flags {flags!r} failed for {name}: {out.stderr.strip()[-300:]}', file=sys.stderr)
    return {}
  return json.loads(lines[-1])


def _worker(args):
  """Times one model in this process and prints one JSON line (for --flags)."""
  for name in args.models.split(','):
    bench = JaxStep(name, args.batch, args.dtype, conv_impl=args.conv_impl)
    times = [bench.time(args.steps) for _ in range(args.repeats)]
    print(
      json.dumps(
        {
          'model': name,
          'seconds': statistics.median(times),
          'all': times,
          'losses': bench.losses,
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
        }
      ),
      flush=True,
    )


def _compare_flags(args, torch_ok: bool):
  """Table of img/s per flag set (each in its own process) and PyTorch, with the losses."""
  sets = _parse_flag_sets(args.flags)
  print(f'flag sets: {sets}')
  print('| model | ' + ' | '.join(f'{k} img/s' for k in sets) + ' | torch img/s | best/torch |')
  print('|---|' + '---|' * (len(sets) + 2))
  for name in args.models.split(','):
    results = {k: _jax_in_subprocess(v, name, args) for k, v in sets.items()}
    _, torch_s = _best(torch_medians(args, name, args.torch_modes.split(',')) if torch_ok else {})
    ips = {k: args.batch / r['seconds'] for k, r in results.items() if r}
    cells = [f'{ips[k]:.1f}' if k in ips else 'failed' for k in sets]
    best = max(ips.values()) if ips else None
    ratio = f'{best * torch_s / args.batch:.2f}x' if best and torch_s else '-'
    t_ips = f'{args.batch / torch_s:.1f}' if torch_s else '-'
    print(f'| {name} | ' + ' | '.join(cells) + f' | {t_ips} | {ratio} |', flush=True)
    print('    (torch = the best of --torch_modes)')
    for k, r in results.items():
      if r:
        print(
          f'    {k}: ms/step {[round(t * 1e3, 1) for t in r["all"]]}, losses {r["losses"]}',
          flush=True,
        )


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='mlp,resnet20,resnet18,vgg19')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument(
    '--repeats',
    type=int,
    default=3,
    help='timed blocks of --steps steps per model (medians are reported)',
  )
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument(
    '--torch_ref',
    default=os.path.join('..', 'shared', 'bench', 'torch_ref.py'),
    help="path to torch_ref.py ('' to skip PyTorch)",
  )
  parser.add_argument(
    '--torch_modes',
    default='eager,compile',
    help='comma-separated torch_ref.py modes: eager, compile, compile_bf16',
  )
  parser.add_argument('--conv_impl', default='auto', help='config.model.conv_impl')
  parser.add_argument(
    '--peak_tflops',
    type=float,
    default=0.0,
    help="the device's peak TFLOP/s for --dtype (e.g. 989 for an H200 in "
    "bf16, dense): adds XLA's FLOPs per step, TFLOP/s and MFU",
  )
  parser.add_argument(
    '--flags',
    default='',
    help="';'-separated NAME=XLA_FLAGS sets to compare, e.g. "
    "'default=;ynn_off=--xla_cpu_experimental_ynn_fusion_type='",
  )
  parser.add_argument('--_worker', action='store_true', help=argparse.SUPPRESS)
  return parser


def _model_row(args, name: str, modes) -> None:
  """Times one model against every PyTorch mode (alternating blocks) and prints its row."""
  bench = JaxStep(name, args.batch, args.dtype, conv_impl=args.conv_impl)
  jax_times, torch_times = [], {m: [] for m in modes}
  for _ in range(args.repeats):  # alternate, so that load changes hit all alike
    jax_times.append(bench.time(args.steps))
    for m in modes:
      torch_times[m].append(time_torch_step(args.torch_ref, name, args.batch, args.steps, m))
  jax_s = statistics.median(jax_times)
  torch_s = {
    m: statistics.median([t for t in v if t]) if any(v) else None for m, v in torch_times.items()
  }
  best_mode, best_s = _best(torch_s)
  cells = ''.join(f'{torch_s[m] * 1e3:.1f} | ' if torch_s[m] else 'failed | ' for m in modes)
  ratio = f'{best_s / jax_s:.2f}x ({best_mode})' if best_s else '-'
  print(
    f'| {name} | {args.batch} | {args.batch / jax_s:.1f} | {jax_s * 1e3:.1f} | {cells}{ratio} |',
    flush=True,
  )
  if args.peak_tflops:
    print('    ' + mfu_line(bench.flops(), jax_s, args.peak_tflops), flush=True)


def main():
  args = _parser().parse_args()
  if args._worker:  # pylint: disable=protected-access
    return _worker(args)
  torch_ok = bool(args.torch_ref) and os.path.exists(args.torch_ref)
  report_load()
  if args.flags:
    return _compare_flags(args, torch_ok)  # each set exactly as given (jaxlib's defaults: '')
  runtime.set_xla_cpu_flags()  # this process times the step as the project's programs run it
  modes = args.torch_modes.split(',') if torch_ok else []
  print(
    f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
    f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}, conv_impl={args.conv_impl}, '
    f'medians of {args.repeats} x {args.steps} steps'
  )
  print(
    '| model | batch | jax img/s | jax ms/step | '
    + ''.join(f'torch {m} ms/step | ' for m in modes)
    + 'jax/best torch |'
  )
  print('|---|---|---|---|' + '---|' * (len(modes) + 1))
  for name in args.models.split(','):
    _model_row(args, name, modes)


def mfu_line(flops: float | None, seconds: float, peak_tflops: float) -> str:
  """'XLA FLOPs/step ..., ... TFLOP/s, MFU ...%' (model FLOPs utilisation against the peak)."""
  if not flops:
    return 'MFU: the backend reports no FLOP count'
  achieved = flops / seconds / 1e12
  return (
    f'XLA FLOPs/step {flops / 1e9:,.1f} G, {achieved:,.2f} TFLOP/s, '
    f'MFU {100 * achieved / peak_tflops:.1f}% of {peak_tflops:g} TFLOP/s'
  )


if __name__ == '__main__':
  main()
