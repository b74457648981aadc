"""Per-conv-shape timing of convolution formulations on the current backend (for cpu_conv.py).

  python -m tools.benchmark_conv --models=resnet20,resnet18,vgg19 --batch=128 --repeats=3

Collects every distinct conv of the named models (by intercepting `nn.Conv` while the model
is initialised on 32x32x3 inputs) and times, per shape, forward and forward + backward
(gradients w.r.t. input and kernel, as in a train step) of:
  xla     lax.conv_general_dilated, NHWC/HWIO (flax's layout);
  nchw    lax.conv_general_dilated, NCHW/OIHW with the transposes in the program;
  im2col  rankdeficit/models/cpu_conv.im2col_conv (shifted views concatenated, one dot);
and, with PyTorch installed (a benchmark-only dependency) and named in --formulations,
  torch, torch_bf16  PyTorch's own oneDNN kernels, channels_last, fp32 / bfloat16 (the
           kernels torch_ref.py's compile / compile_bf16 modes run): the per-layer account
           of where our step loses to PyTorch (`--formulations=xla,im2col,torch,torch_bf16`).
The formulations alternate within each repeat (A B C A B C ...), so load changes hit all
alike; medians of `--repeats` are printed, with 'cpu' = the formulation that
`cpu_conv.prefers_im2col` picks and whether it is the fastest measured. Weighted by how many
times each shape occurs, the last lines give the per-model conv total for each formulation
and for the per-shape choice.

PROVISIONAL results, measured UNDER LOAD (load average 8-17 on the 2-core AVX-512 EPYC,
jaxlib 0.10.2; ResNet-20 at batch 128, ResNet-18 and VGG-19 at batch 32), ms, medians of 3:
  * 3x3 convs on maps >= 8x8: XLA's conv is the fastest or within noise of the fastest on
    every pass (NCHW dimension numbers trade places with it from run to run). im2col + dot
    loses 2-10x on the forward when cin is small (the patch matrix is memory traffic);
    per-tap dots (`shifts`, also in an HWNC layout) lose 2-8x.
  * The kernel gradient dominates: ResNet-20 conv totals fwd 273-389, dx 333-418,
    dw 1157-1909 (XLA). dw of the 32x32x16->16 conv costs 110-200 ms against a 20-33 ms
    forward of equal FLOPs; nothing tried beats it (im2col 307-732, shifts 308, hwnc 292).
  * im2col wins: 2x2 maps (VGG-19 stage 5) fwd 2000 -> 15, dx 1956 -> 12, dw 22 -> 7;
    4x4 maps at 256-512 channels fwd 63 -> 48, dx 65 -> 27 (dw: XLA); strided 1x1
    projections dw 35-44 -> 7-10, dx 10-12 -> 2-4.
  * Totals with cpu_conv.pick ('cpu') vs all-XLA: VGG-19 (batch 32) fwd 8469 -> 529,
    dx 8269 -> 491, dw 631 -> 569 (the 2x2 rule existed before as small_conv); ResNet-18
    (batch 32) dw 1881 -> 1810; ResNet-20 unchanged within noise except the projections.

Under the project's XLA CPU flags (rankdeficit/run/runtime.py: convs on XLA's Eigen kernels,
not YNNPACK; this tool sets them), IDLE 2-core AVX2 EPYC, 2026-12-05, ResNet-20 at batch 128,
medians of 3: conv totals fwd 215 / dx 210 / dw 235 ms with XLA's conv, 868 / 472 / 1057 with
im2col, and 215 / 209 / 234 with `pick`. The kernel gradient is no longer 4-5x the forward,
and `pick` is within 10 ms of the per-shape best on every pass (im2col would win only the
3-channel stem's fwd/dx and two strided dx, by 2-8 ms each): the table holds.
"""

import argparse
import collections
import functools
import os
import statistics
import time

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from configs import base
from rankdeficit import models
from rankdeficit.models import cpu_conv
from rankdeficit.run import runtime

TORCH_NAMES = {
  'resnet18': 'resnet18',
  'resnet20': 'resnet20',
  'vgg19': 'vgg19_bn',
  'resnet34': 'resnet34',
}
Shape = cpu_conv.ConvShape


def conv_shapes(name: str) -> collections.Counter:
  """Counter of the `Shape`s of every nn.Conv in model `name` on 32x32x3 inputs."""
  config = base.get_config()
  config.model.name = TORCH_NAMES.get(name, name)
  config.model.conv_impl = 'xla'
  model = models.create_model(config.model, num_classes=10)
  found = collections.Counter()

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv) and context.method_name == '__call__':
      x, conv = args[0], context.module
      stride = conv.strides if isinstance(conv.strides, int) else (conv.strides or (1,))[0]
      found[
        Shape(x.shape[1], x.shape[2], x.shape[3], conv.features, conv.kernel_size[0], stride)
      ] += 1
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))
    )
  return found


def _xla(x, w, stride, pad):
  return lax.conv_general_dilated(
    x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def _nchw(x, w, stride, pad):
  y = lax.conv_general_dilated(
    x.transpose(0, 3, 1, 2),
    w.transpose(3, 2, 0, 1),
    (stride, stride),
    pad,
    dimension_numbers=('NCHW', 'OIHW', 'NCHW'),
  )
  return y.transpose(0, 2, 3, 1)


def _im2col(x, w, stride, pad):
  return cpu_conv.im2col_conv(x, w, (stride, stride), pad)


def _shifts(x, w, stride, pad):
  """A sum of kh*kw dots, one per kernel tap (no patch matrix)."""
  kh, kw = w.shape[:2]
  views = cpu_conv.shifted_views(x, kh, kw, (stride, stride), pad)
  return functools.reduce(jnp.add, [v @ w[t // kw, t % kw] for t, v in enumerate(views)])


def _hwnc(x, w, stride, pad):
  """`_shifts` in an HWNC layout, where a tap's view is a slice of leading axes."""
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = pad
  x = jnp.pad(x.transpose(1, 2, 0, 3), ((pt, pb), (pl, pr), (0, 0), (0, 0)))
  ho, wo = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
  taps = [
    x[i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride] @ w[i, j]
    for i in range(kh)
    for j in range(kw)
  ]
  return functools.reduce(jnp.add, taps).transpose(2, 0, 1, 3)


FORMULATIONS = {'xla': _xla, 'nchw': _nchw, 'im2col': _im2col, 'shifts': _shifts, 'hwnc': _hwnc}


PASSES = cpu_conv.PASSES
TORCH = ('torch', 'torch_bf16')  # PyTorch's own kernels, for the per-layer account


def programs(shape: Shape, batch: int, pass_: str, names=tuple(FORMULATIONS)):
  """{formulation: (jitted fn, args)} computing pass `pass_` of one conv shape."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, shape.height, shape.width, shape.cin)), jnp.float32)
  w = jnp.asarray(
    rng.normal(size=(shape.kernel, shape.kernel, shape.cin, shape.cout)) * 0.05, jnp.float32
  )
  pad = ((shape.kernel // 2,) * 2,) * 2
  out = {}
  for key in names:
    conv = FORMULATIONS[key]
    fwd = functools.partial(conv, stride=shape.stride, pad=pad)
    if pass_ != 'fwd':
      ct = jnp.ones_like(jax.eval_shape(fwd, x, w))
      fn = jax.jit(
        jax.grad(lambda x, w, ct, fwd=fwd: jnp.vdot(fwd(x, w), ct), argnums=PASSES.index(pass_) - 1)
      )
      out[key] = (fn, (x, w, ct))
    else:
      out[key] = (jax.jit(fwd), (x, w))
  return out


def torch_programs(shape: Shape, batch: int, pass_: str, names: tuple[str, ...]):
  """{name: thunk} running pass `pass_` of one conv shape in PyTorch (oneDNN), channels_last.

  'torch' is fp32, 'torch_bf16' the same in bfloat16 (what torch_ref.py's compile_bf16 mode
  runs its convs in). The gradient passes call the backward kernels directly
  (torch.nn.grad.conv2d_input / conv2d_weight), as jax.grad's program does after XLA drops
  the unused forward. Empty when torch is not installed (a benchmark-only dependency).
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {}
  gen = torch.Generator().manual_seed(0)
  pad, stride = shape.kernel // 2, shape.stride
  out = {}
  for key, dtype in (('torch', torch.float32), ('torch_bf16', torch.bfloat16)):
    if key not in names:
      continue
    x = torch.randn(batch, shape.cin, shape.height, shape.width, generator=gen).to(
      dtype=dtype, memory_format=torch.channels_last
    )
    w = (torch.randn(shape.cout, shape.cin, shape.kernel, shape.kernel, generator=gen) * 0.05).to(
      dtype=dtype, memory_format=torch.channels_last
    )
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
    ct = torch.ones_like(y)
    thunk = {
      'fwd': lambda x=x, w=w: torch.nn.functional.conv2d(x, w, stride=stride, padding=pad),
      'dx': lambda x=x, w=w, ct=ct: torch.nn.grad.conv2d_input(
        x.shape, w, ct, stride=stride, padding=pad
      ),
      'dw': lambda x=x, w=w, ct=ct: torch.nn.grad.conv2d_weight(
        x, w.shape, ct, stride=stride, padding=pad
      ),
    }[pass_]
    out[key] = thunk
  return out


def time_shape(
  shape: Shape, batch: int, pass_: str, repeats: int, names=tuple(FORMULATIONS)
) -> dict[str, float]:
  """Median seconds per call of each formulation in `names`, interleaved."""
  thunks = {
    k: functools.partial(lambda fn, args: jax.block_until_ready(fn(*args)), *prog)
    for k, prog in programs(
      shape, batch, pass_, tuple(n for n in names if n in FORMULATIONS)
    ).items()
  }
  thunks.update(torch_programs(shape, batch, pass_, names))
  for thunk in thunks.values():  # compile + warm up
    thunk()
  times = collections.defaultdict(list)
  for _ in range(repeats):
    for key, thunk in thunks.items():
      start = time.perf_counter()
      thunk()
      times[key].append(time.perf_counter() - start)
  return {k: statistics.median(times[k]) for k in names if k in times}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='resnet20,resnet18,vgg19')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--passes', default=','.join(PASSES))
  parser.add_argument(
    '--formulations',
    default=','.join(FORMULATIONS),
    help=f'comma-separated, from {", ".join((*FORMULATIONS, *TORCH))} '
    '(the torch ones need PyTorch installed)',
  )
  args = parser.parse_args()
  runtime.set_xla_cpu_flags()  # time the convs under the flags the project's programs use
  print(f'backend {jax.default_backend()}, batch {args.batch}, medians of {args.repeats}, ms')
  print(f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  names = tuple(args.formulations.split(','))
  print(
    '| model | HxW | cin->cout | k/s | n | pass | ' + ' | '.join(names) + ' | cpu picks | best |'
  )
  print('|---|---|---|---|---|---|' + '---|' * (len(names) + 2))
  for name in args.models.split(','):
    totals = collections.Counter()
    for shape, count in conv_shapes(name).items():
      for pass_ in args.passes.split(','):
        pick = cpu_conv.pick(shape, pass_)
        t = time_shape(shape, args.batch, pass_, args.repeats, names)
        best = min((k for k in t if k in FORMULATIONS), key=t.get)
        for k, v in t.items():
          totals[k, pass_] += count * v
        totals['cpu', pass_] += count * t.get(pick, float('nan'))
        print(
          f'| {name} | {shape.height}x{shape.width} | {shape.cin}->{shape.cout} | '
          f'{shape.kernel}/{shape.stride} | {count} | {pass_} | '
          + ' | '.join(f'{v * 1e3:.1f}' for v in t.values())
          + f' | {pick} | {best} |',
          flush=True,
        )
    for pass_ in args.passes.split(','):
      print(
        f'  {name} {pass_} conv total ms: '
        + ', '.join(f'{k}={totals[k, pass_] * 1e3:.0f}' for k in (*names, 'cpu')),
        flush=True,
      )


if __name__ == '__main__':
  main()
