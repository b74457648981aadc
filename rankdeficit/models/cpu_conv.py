"""Convolutions formulated for XLA's CPU backend: im2col + one dot where that is faster.

XLA CPU (jaxlib 0.10.2) runs some convolutions far below its matmul rate. The worst case is
a 3x3 'same' conv on a 2x2 map (VGG-19's last stage on 32x32 inputs): ~8 s for the forward
of one 512->512 layer at batch 128 on 2 cores, against 0.3 s on a 4x4 map. Another is the
kernel gradient of a strided 1x1 conv (ResNet projection shortcuts), several times slower
than the equivalent dot. Written as im2col (the kh*kw shifted, zero-padded, strided views
concatenated along channels) followed by a single dot, such a conv runs at the matmul rate.

tools/benchmark_conv.py times each pass (forward, input gradient `dx`, kernel gradient
`dw`) of every conv shape of ResNet-20, ResNet-18 and VGG-19 as XLA's conv, im2col + dot and
other formulations; `pick` encodes the winner per (shape, pass), and a `jax.custom_vjp`
lets a conv use different formulations for its three passes. All formulations compute the
same sums in different orders. Parameters are untouched (an HWIO kernel named 'kernel'), so
checkpoints and `nn.intercept_methods` see a plain `nn.Conv`.

`conv_general_dilated(impl)` returns a drop-in for `lax.conv_general_dilated`, to pass as
`nn.Conv(..., conv_general_dilated=...)`:
- 'xla': XLA's native convolution for every pass (what GPU/TPU use);
- 'im2col': im2col + dot for every pass of every plain conv (see `_plain`);
- 'cpu': per (shape, pass) as `pick` says.
Convs that are not plain (dilated, grouped, non-NHWC, string padding) always use XLA's.
`resolve('auto')` is 'cpu' on the CPU backend and 'xla' on GPU/TPU (`jax.default_backend()`
at model construction).
"""

from __future__ import annotations

import collections
import functools
from typing import Callable

import jax
from jax import lax
import jax.numpy as jnp

CONV_IMPLS = ('auto', 'xla', 'im2col', 'cpu')
PASSES = ('fwd', 'dx', 'dw')  # forward; gradient w.r.t. the input; w.r.t. the kernel
_NHWC = ('NHWC', 'HWIO', 'NHWC')

ConvShape = collections.namedtuple('ConvShape', 'height width cin cout kernel stride')


def resolve(impl: str) -> str:
  """'auto' -> 'cpu' on the CPU backend, 'xla' elsewhere; other values are returned as is."""
  if impl not in CONV_IMPLS:
    raise ValueError(
      f'Unknown conv_impl {impl!r}; set config.model.conv_impl to one of {", ".join(CONV_IMPLS)}.'
    )
  if impl == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def pick(shape: ConvShape, pass_: str) -> str:
  """'im2col' or 'xla': the faster formulation of one pass of one conv on XLA CPU.

  Fitted to tools/benchmark_conv.py (ResNet-20 at batch 128, ResNet-18 and VGG-19 at batch
  32, 2-core AVX-512 EPYC, jaxlib 0.10.2; measured under load, interleaved, medians of 3).
  XLA's conv won the other (shape, pass) pairs against im2col, NCHW dimension numbers,
  per-tap dots and per-tap dots in an HWNC layout; in particular every kernel gradient of a
  3x3 conv on a map of 16 pixels or more, the largest single cost of a CIFAR ResNet step.
  """
  pixels = shape.height * shape.width
  if pixels <= 4:  # pathological tiny maps: ~100x, every pass
    return 'im2col'
  if pixels <= 16 and pass_ != 'dw':  # 4x4 maps (VGG-19 stage 4): ~1.3-2x
    return 'im2col'
  if shape.kernel == 1 and pass_ != 'fwd':  # a 1x1 conv is a dot; XLA's gradients are not
    return 'im2col'
  return 'xla'


def _plain(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation,
  rhs_dilation,
  dimension_numbers,
  feature_group_count,
  batch_group_count,
) -> bool:
  """An undilated, ungrouped, square 2-D NHWC/HWIO conv with explicit padding."""
  return (
    lhs.ndim == 4
    and not isinstance(padding, str)
    and rhs.shape[0] == rhs.shape[1]
    and window_strides[0] == window_strides[1]
    and all(d == 1 for d in (lhs_dilation or (1, 1)))
    and all(d == 1 for d in (rhs_dilation or (1, 1)))
    and feature_group_count == 1
    and batch_group_count == 1
    and dimension_numbers is not None
    and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  )


def shifted_views(x, kh: int, kw: int, window_strides, padding) -> list:
  """The kh*kw zero-padded, strided NHWC views of `x` that the kernel's taps read."""
  sh, sw = window_strides
  (pt, pb), (pl, pr) = padding
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0))) if pt or pb or pl or pr else x
  ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  return [
    x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]


def im2col_conv(lhs, rhs, window_strides, padding, precision=None, preferred_element_type=None):
  """NHWC x HWIO conv as one dot over the concatenated shifted views."""
  kh, kw, cin, cout = rhs.shape
  views = shifted_views(lhs, kh, kw, window_strides, padding)
  # (i, j, c) order along the last axis = the HWIO kernel's row-major order.
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  return jnp.dot(
    patches,
    rhs.reshape(kh * kw * cin, cout),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def xla_conv(lhs, rhs, window_strides, padding, precision=None, preferred_element_type=None):
  """XLA's native NHWC x HWIO convolution."""
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    dimension_numbers=_NHWC,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


FORMULATIONS = {'xla': xla_conv, 'im2col': im2col_conv}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def per_pass_conv(
  lhs, rhs, window_strides, padding, picks, precision=None, preferred_element_type=None
):
  """A plain conv whose forward, dx and dw use `picks` = (fwd, dx, dw) formulation names."""
  return FORMULATIONS[picks[0]](
    lhs, rhs, window_strides, padding, precision, preferred_element_type
  )


def _per_pass_fwd(lhs, rhs, window_strides, padding, picks, precision, preferred):
  return per_pass_conv(lhs, rhs, window_strides, padding, picks, precision, preferred), (lhs, rhs)


def _per_pass_bwd(window_strides, padding, picks, precision, preferred, residuals, dy):
  lhs, rhs = residuals
  dx_conv, dw_conv = (
    functools.partial(
      FORMULATIONS[p],
      window_strides=window_strides,
      padding=padding,
      precision=precision,
      preferred_element_type=preferred,
    )
    for p in picks[1:]
  )
  dx = jax.vjp(lambda x: dx_conv(x, rhs), lhs)[1](dy)[0]
  dw = jax.vjp(lambda w: dw_conv(lhs, w), rhs)[1](dy)[0]
  return dx, dw


per_pass_conv.defvjp(_per_pass_fwd, _per_pass_bwd)


def _conv(
  impl,
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  if impl != 'xla' and _plain(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
  ):
    strides = tuple(window_strides)
    padding = tuple(tuple(p) for p in padding)
    if impl == 'im2col':
      return im2col_conv(lhs, rhs, strides, padding, precision, preferred_element_type)
    shape = ConvShape(
      lhs.shape[1], lhs.shape[2], rhs.shape[2], rhs.shape[3], rhs.shape[0], strides[0]
    )
    picks = tuple(pick(shape, p) for p in PASSES)
    if len(set(picks)) == 1:  # plain autodiff of one formulation
      return FORMULATIONS[picks[0]](lhs, rhs, strides, padding, precision, preferred_element_type)
    return per_pass_conv(lhs, rhs, strides, padding, picks, precision, preferred_element_type)
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def conv_general_dilated(impl: str) -> Callable:
  """A `lax.conv_general_dilated` drop-in for `nn.Conv` using formulation `impl`.

  Args:
    impl: 'xla' | 'im2col' | 'cpu' (resolve 'auto' first with `resolve`).
  Returns:
    A function with `lax.conv_general_dilated`'s signature.
  """
  if impl not in ('xla', 'im2col', 'cpu'):
    raise ValueError(
      f"conv_general_dilated takes 'xla', 'im2col' or 'cpu', not {impl!r} "
      "(resolve 'auto' with cpu_conv.resolve first)."
    )
  return functools.partial(_conv, impl)
