"""The measurements the collapse monitor takes of one batch, matrix by matrix.

`rankdeficit/training/monitor.py` captures the forward and backward pass (logits,
representations, every Dense/Conv input, the parameter gradients, sown attention logits)
and chooses the coordinate / row subsets; the functions here turn what it captured into
the metrics dict (key names in monitor.py's docstring): the logits' norms, ranks and top
singular values (`logit_metrics`), each representation's rank and spectrum
(`rep_metrics`), per weight layer the gradient rank, input rank and kernel / input
alignment (`weight_layer_metrics`), and the attention statistics (`attention_means`).

`pick(name, n, k)` is the monitor's subset choice: the kept indices of matrix `name`
(`n` coordinates or rows, limit `k`), or None to keep it whole. Every matrix gets one
singular-value decomposition (rank and top-k from the same singular values).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rankdeficit.metrics import alignment as alignment_lib
from rankdeficit.metrics import attention as attention_lib
from rankdeficit.metrics import spectral


def _get_path(tree, path: str):
  for part in path.split('/'):
    tree = tree[part]
  return tree


def _spectrum(a: jax.Array, top_k: int):
  s = spectral.singular_values(a)
  tol = spectral.rank_tolerance(s, a.shape)
  rank = jnp.where(jnp.all(jnp.isfinite(s)), jnp.sum(s > tol), spectral.INVALID_RANK)
  top = s[:top_k] if s.shape[-1] >= top_k else jnp.pad(s, (0, top_k - s.shape[-1]))
  return rank.astype(jnp.int32), top


def logit_metrics(logits: jax.Array, temperature, top_k: int) -> dict[str, jax.Array]:
  """Logits norms, pre-softmax rank and top singular values, post-softmax rank."""
  out = {
    'logits_norm': spectral.logits_norm(logits),
    'logits_norm_per_sample': spectral.mean_per_sample_norm(logits),
  }
  out['rank/pre_softmax'], out['sv/logits'] = _spectrum(logits, top_k)
  out['rank/post_softmax'] = spectral.softmax_rank(logits, temperature)
  return out


def rep_metrics(reps, pick, max_dims: int, top_k: int) -> dict[str, jax.Array]:
  """Rank and top singular values of each representation (a coordinate subset of it)."""
  out = {}
  for name, rep in reps.items():
    out[f'rank/rep/{name}'], out[f'sv/rep/{name}'] = _spectrum(
      spectral.representation_matrix(
        rep, max_dims=max_dims, indices=pick(f'rep/{name}', math.prod(rep.shape[1:]), max_dims)
      ),
      top_k,
    )
  return out


def weight_layer_metrics(
  out,
  variables,
  grads,
  inputs,
  modules_box,
  alias_box,
  pick,
  *,
  max_dims,
  max_alignment_rows,
  top_k,
  input_ranks,
) -> None:
  """Adds to `out`, per weight layer (forward order), its gradient rank, its input's rank
  (with `input_ranks`) and its kernel / input alignment, then the mean alignment maximum."""
  maxima = []
  for path, layer_input in inputs.items():
    kernel = _get_path(variables['params'], path)['kernel']
    out[f'rank/grad/{path}'] = alignment_lib.gradient_rank(_get_path(grads, path)['kernel'])
    if input_ranks:
      out[f'rank/input/{path}'] = _input_rank(
        out, path, layer_input, alias_box.get(path), pick, max_dims
      )
    align = _alignment(
      modules_box[path],
      kernel,
      layer_input,
      lambda n: pick(f'rows/{path}', n, max_alignment_rows),
      max_alignment_rows,
      top_k,
    )
    if align is None:
      continue
    out[f'alignment/{path}'] = align
    out[f'alignment_max/{path}'] = alignment_lib.max_alignment(align)
    maxima.append(out[f'alignment_max/{path}'])
  if maxima:
    out['alignment_max_mean'] = jnp.mean(jnp.stack(maxima))


def _input_rank(out, path: str, layer_input, alias, pick, max_dims: int) -> jax.Array:
  """Rank of a layer's input: that of the representation or input it aliases, if any."""
  kind, src = alias or ('', '')
  if kind == 'rep':
    return out[f'rank/rep/{src}']
  if kind == 'input':
    return out[f'rank/input/{src}']
  indices = pick(f'input/{path}', math.prod(layer_input.shape[1:]), max_dims)
  return spectral.representation_rank(layer_input, max_dims=max_dims, indices=indices)


def _alignment(module, kernel, layer_input, pick_rows, max_rows: int, top_k: int):
  """The top-k singular-vector alignment of the kernel with its input rows, a subset
  `pick_rows(n)` of them (None when the layer is unsupported)."""
  a = _alignment_input(module, layer_input, max_rows)
  if a is None:
    return None
  a = alignment_lib.subsample_rows(a, max_rows, indices=pick_rows(a.shape[0]))
  return alignment_lib.singular_vector_alignment(alignment_lib.kernel_as_matrix(kernel), a, top_k)


def _alignment_input(module, layer_input, max_rows: int) -> jax.Array | None:
  """The ``n x in`` input matrix of a captured layer (before the row subset), or None
  when unsupported."""
  if isinstance(module, nn.Conv):
    ks = tuple(module.kernel_size)
    if len(ks) != 2 or layer_input.ndim != 4 or module.feature_group_count != 1:
      return None
    if isinstance(module.padding, str) and module.padding.upper() not in ('SAME', 'VALID'):
      return None
    h, w = layer_input.shape[1:3]
    strides = module.strides or 1
    sh, sw = (strides, strides) if isinstance(strides, int) else tuple(strides)
    positions = max(math.ceil(h / sh) * math.ceil(w / sw), 1)
    n_img = min(layer_input.shape[0], max(1, (16 * max_rows) // positions))
    a = alignment_lib.conv_patches(
      layer_input[:n_img],
      ks,
      strides=module.strides,
      padding=module.padding,
      kernel_dilation=module.kernel_dilation,
      input_dilation=module.input_dilation,
    )
  else:
    a = alignment_lib.layer_input_matrix(layer_input, layer_input.shape[-1])
  return a


def attention_means(attention) -> dict[str, jax.Array]:
  """The mean over heads of each per-head statistic of each layer's attention logits."""
  out = {}
  for name, z in attention.items():
    out.update(
      {
        f'attention/{stat}/{name}': jnp.mean(per_head)
        for stat, per_head in attention_lib.attention_statistics(z).items()
      }
    )
  return out
