"""Train-time collapse metrics on a fixed batch, written through CLU metric writers.

Usage from the training loop (``model`` and ``loss_fn`` static, created once)::

    monitor_fn = monitor.make_collapse_metrics_fn(model, loss_fn, max_dims=10_000, top_k=15)
    ...
    if step % config.monitor_every == 0:
        m = monitor_fn(variables, fixed_images, fixed_labels, temperature, monitor_key)
        monitor.write_collapse_metrics(writer, step, m)

``variables`` is the full variable dict (``{'params': ..., 'batch_stats': ...}``) and the
model contract is ``model.apply(variables, images, train=False) -> (logits, reps)``.
``loss_fn(logits, labels, temperature) -> scalar`` (mean loss over the batch).

What is measured (keys of the returned flat dict; ``<path>`` is the module path of a
``nn.Dense`` / ``nn.Conv`` joined with '/', ``<name>`` a key of ``reps``):

  loss, logits_norm (Frobenius), logits_norm_per_sample (mean row L2 norm)
  rank/pre_softmax, rank/post_softmax              rank(M), rank(softmax(M / T))
  rank/rep/<name>, sv/rep/<name> [top_k]            each representation (flattened, at most
                                                    ``max_dims`` fixed random coordinates)
  sv/logits [top_k]
  rank/grad/<path>                                  rank of dL/dW (eval-mode forward)
  rank/input/<path>                                 rank of that layer's input (flattened,
                                                    ``max_dims`` coordinates); only with
                                                    ``input_ranks=True`` (off by default:
                                                    most inputs ARE the previous layer's
                                                    representation, whose rank is reported)
  alignment/<path> [top_k, top_k], alignment_max/<path>
  alignment_max_mean                                mean over layers of the max alignment
  attention/<stat>/block_<i>                        ViTs: rank, effective_rank, entropy,
                                                    logits_norm of each attention layer's
                                                    maps (metrics.attention), mean over heads

Dense/Conv inputs and kernels are captured generically with ``nn.intercept_methods``
(no model changes). A module called several times is recorded at its first call.
Alignment is skipped for grouped convs and non SAME/VALID/explicit padding; conv inputs
become patches (``metrics.conv_patches``) taken from the first images of the batch
(at most ``16 * max_alignment_rows`` patch rows), then ``max_alignment_rows`` fixed
random rows are kept. ``DenseGeneral`` (attention projections) is not captured.

Subsets: which coordinates / rows are kept is fixed for a run. Matrix ``name`` with ``n``
coordinates (rows) over the limit ``k`` keeps the ``k`` indices
``metrics.seeded_subset_indices(n, k, (*key_seed(key), crc32(name) & 0x7FFFFFFF))``,
drawn with numpy on the host while the program is traced and compiled in as constants.
Names: ``rep/<name>``, ``input/<path>``, ``rows/<path>``; ``subset_indices`` lists them.
Drawing them inside the program instead (``jax.random.choice(..., replace=False)``, one
sort-based shuffle per subset) made up most of the compiled program (ResNet-20:
~41,700 HLO lines, 126 while loops); see tools/benchmark_compile.py.

Cost: every distinct matrix gets ONE singular-value decomposition (rank and top-k come
from the same singular values); with ``input_ranks=True`` a layer input that is the very
same array as a representation (or as another layer's input, e.g. a ResNet block's conv1
and its projection shortcut) reuses that spectrum instead of a second SVD (its coordinate
subset is then the representation's). On CPU one call costs seconds (an 8x512 MLP at batch
512: ~25 SVD/eigh of 512x512 matrices), so run it every few hundred steps at most; see
``configs/base.py`` (``metrics_every_steps``) and ``tools/benchmark_metrics.py --fraction``.

The training loop also appends every call, exact values included, to
``<workdir>/monitor/`` (``rankdeficit/training/monitor_log.py``), which the paper's figures read.

This module owns the program: capturing the forward/backward pass, choosing the subsets,
assembling and compiling the metrics. The per-matrix measurements are in
``rankdeficit/training/monitor_measurements.py``, the CLU writing (``write_collapse_metrics``,
re-exported here) in ``rankdeficit/training/monitor_writer.py``; the loop's hook that
runs them is ``rankdeficit/training/monitor_hook.py``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit.metrics import spectral
from rankdeficit.models import vit
from rankdeficit.training import monitor_measurements
from rankdeficit.training import monitor_writer

# Re-exported: the writer lives in monitor_writer.py, this module's public API keeps it.
write_collapse_metrics = monitor_writer.write_collapse_metrics

__all__ = [
  'capture_layers',
  'collapse_metrics',
  'forward_order',
  'host_subsets',
  'key_seed',
  'make_collapse_metrics_fn',
  'subset_indices',
  'write_collapse_metrics',
]

LossFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
# On CPU, most of the monitor's compile time is LLVM optimizing ~1,100 elementwise fusions
# that run once per call, while the call's time is in library calls these options leave
# alone (LAPACK QR/SVD/eigh, Eigen convolutions and dots). ResNet-20: compile CPU time
# halved, call time unchanged within noise (tools/benchmark_compile.py).
CPU_COMPILER_OPTIONS = {
  'xla_backend_optimization_level': 0,
  'xla_llvm_disable_expensive_passes': True,
}
# subsets(name, n, k): the k kept coordinates / rows (sorted indices < n) of the matrix
# `name` ('rep/<name>', 'input/<path>' or 'rows/<path>'); called only when n > k.
SubsetFn = Callable[[str, int, int], Any]


def _name_word(name: str) -> int:
  """A stable 31-bit word of a matrix name (Python's hash() changes per process)."""
  return zlib.crc32(name.encode('utf-8')) & 0x7FFFFFFF


def key_seed(key: jax.Array) -> tuple[int, ...]:
  """The bits of a PRNG key (raw ``uint32[2]`` or typed) as a tuple of ints, on the host."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return tuple(int(w) for w in np.asarray(jax.device_get(key)).ravel())


def host_subsets(seed: int | Sequence[int]) -> SubsetFn:
  """The monitor's subsets, drawn with numpy while the program is traced (so they are
  constants of the compiled program): matrix ``name`` keeps
  ``spectral.seeded_subset_indices(n, k, (*seed, crc32(name) & 0x7FFFFFFF))``.

  They depend only on ``seed``, the matrix name and ``(n, k)``: fixed across the calls
  of a run, across processes and across resume."""
  words = tuple(int(w) for w in np.atleast_1d(seed))
  return lambda name, n, k: spectral.seeded_subset_indices(n, k, (*words, _name_word(name)))


def _key_subsets(key: jax.Array) -> SubsetFn:
  """Subsets drawn inside the program from ``key`` (``spectral.feature_subset_indices``
  with ``fold_in(key, crc32(name) & 0x7FFFFFFF)``); slow to compile, see module doc."""
  return lambda name, n, k: spectral.feature_subset_indices(
    n, k, jax.random.fold_in(key, _name_word(name))
  )


def capture_layers(records: dict[str, dict[str, Any]]):
  """An interceptor storing, per Dense/Conv module path, its input and module."""

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(module, (nn.Dense, nn.Conv)) and args:
      path = '/'.join(module.path)
      if path not in records:
        records[path] = {'input': args[0], 'module': module}
    return next_fun(*args, **kwargs)

  return interceptor


def forward_order(model: nn.Module, variables: dict, images: jax.Array) -> dict[str, list[str]]:
  """Captured layer paths and representation names in forward order.

  The metrics dict comes back from ``jit`` with sorted keys; figures need the network's
  order. One abstract trace (``jax.eval_shape``), no compute.
  """
  order: dict[str, list[str]] = {}

  def trace(v, x):
    records: dict[str, dict[str, Any]] = {}
    with nn.intercept_methods(capture_layers(records)):
      _, reps = model.apply(v, x, train=False)
    order['layers'], order['reps'] = list(records), list(reps)
    return jnp.zeros(())

  jax.eval_shape(trace, variables, images)
  return order


def _differentiate_with_capture(model, variables, images, labels, temperature, loss_fn):
  """The loss and its parameter gradients on one batch, with what the metrics need from
  inside the forward pass: logits, representations, every Dense/Conv input, the modules,
  which inputs alias a representation or an earlier input, and sown attention logits."""
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def loss_with_capture(p):
    records: dict[str, dict[str, Any]] = {}
    with nn.intercept_methods(capture_layers(records)):
      # `intermediates` holds what models sow: the ViT's attention logits (else nothing).
      (logits, reps), state = model.apply(
        {'params': p, **rest}, images, train=False, mutable=['intermediates']
      )
    inputs = {path: r['input'] for path, r in records.items()}
    modules = {path: r['module'] for path, r in records.items()}
    loss = loss_fn(logits, labels, temperature)
    attention = vit.sown_attention_logits(state.get('intermediates'))
    return loss, (logits, reps, inputs, modules, attention)

  # Modules are Python objects: trace once to learn them, then differentiate.
  modules_box = {}
  # layer path -> ("rep", name) / ("input", earlier path) when its input is that very array
  alias_box: dict[str, tuple[str, str]] = {}

  def loss_for_grad(p):
    loss, (logits, reps, inputs, modules, attention) = loss_with_capture(p)
    modules_box.update(modules)
    seen = {id(r): ('rep', name) for name, r in reps.items()}
    for path, x in inputs.items():
      if id(x) in seen:
        alias_box[path] = seen[id(x)]
      else:
        seen[id(x)] = ('input', path)
    return loss, (logits, reps, inputs, attention)

  with jax.default_matmul_precision('highest'):
    (loss, (logits, reps, inputs, attention)), grads = jax.value_and_grad(
      loss_for_grad, has_aux=True
    )(params)
  return loss, logits, reps, inputs, attention, grads, modules_box, alias_box


def collapse_metrics(
  model: nn.Module,
  variables: dict,
  images: jax.Array,
  labels: jax.Array,
  *,
  temperature: float | jax.Array,
  loss_fn: LossFn,
  key: jax.Array | None = None,
  subsets: SubsetFn | None = None,
  max_dims: int = 10_000,
  top_k: int = 15,
  max_alignment_rows: int = 4096,
  input_ranks: bool = False,
) -> dict[str, jax.Array]:
  """All train-time collapse metrics on one batch (see module docstring). Jittable with
  ``model``, ``loss_fn``, ``subsets``, ``max_dims``, ``top_k``, ``max_alignment_rows``,
  ``input_ranks`` static.

  Exactly one of ``subsets`` (e.g. ``host_subsets(seed)``: numpy subsets, constants of
  the program; what ``make_collapse_metrics_fn`` uses) or ``key`` (subsets drawn inside
  the program with ``jax.random``: the same numbers for the same indices, but a
  sort-based shuffle per subset to compile) chooses the coordinate and row subsets.
  """
  if (key is None) == (subsets is None):
    raise ValueError(
      'collapse_metrics: pass exactly one of key= (subsets drawn in the '
      'program) or subsets= (e.g. monitor.host_subsets(seed))'
    )
  draw = _key_subsets(key) if subsets is None else subsets
  pick = lambda name, n, k: draw(name, n, k) if n > k else None
  loss, logits, reps, inputs, attention, grads, modules_box, alias_box = (
    _differentiate_with_capture(model, variables, images, labels, temperature, loss_fn)
  )

  out = {
    'loss': loss,
    **monitor_measurements.logit_metrics(logits.astype(jnp.float32), temperature, top_k),
  }
  out.update(monitor_measurements.rep_metrics(reps, pick, max_dims, top_k))
  monitor_measurements.weight_layer_metrics(
    out,
    variables,
    grads,
    inputs,
    modules_box,
    alias_box,
    pick,
    max_dims=max_dims,
    max_alignment_rows=max_alignment_rows,
    top_k=top_k,
    input_ranks=input_ranks,
  )
  out.update(monitor_measurements.attention_means(attention))
  return out


def make_collapse_metrics_fn(
  model: nn.Module,
  loss_fn: LossFn,
  *,
  max_dims: int = 10_000,
  top_k: int = 15,
  max_alignment_rows: int = 4096,
  input_ranks: bool = False,
):
  """``fn(variables, images, labels, temperature, key) -> dict``, compiled once per key.

  The coordinate / row subsets are ``host_subsets(key_seed(key))``: drawn with numpy
  from the key's bits and each matrix's name while tracing, and compiled in as
  constants (no random draw in the program). Keep ``key`` fixed for a run (train.py:
  ``PRNGKey(config.seed + 1)``): every call, and every resumed process, then measures
  the same coordinates. ``temperature`` is traced (a schedule does not recompile).
  ``fn.lower(...)`` (same arguments) lowers the program without running it. On CPU it is
  compiled with ``CPU_COMPILER_OPTIONS`` (cheap LLVM codegen: see there).
  """
  options = CPU_COMPILER_OPTIONS if jax.default_backend() == 'cpu' else None

  @functools.partial(jax.jit, static_argnames=('seed',), compiler_options=options)
  def program(variables, images, labels, temperature, seed):
    return collapse_metrics(
      model,
      variables,
      images,
      labels,
      temperature=temperature,
      loss_fn=loss_fn,
      subsets=host_subsets(seed),
      max_dims=max_dims,
      top_k=top_k,
      max_alignment_rows=max_alignment_rows,
      input_ranks=input_ranks,
    )

  def fn(variables, images, labels, temperature, key):
    return program(variables, images, labels, temperature, seed=key_seed(key))

  fn.lower = lambda variables, images, labels, temperature, key: program.lower(
    variables, images, labels, temperature, seed=key_seed(key)
  )
  return fn


def subset_indices(
  model: nn.Module,
  variables: dict,
  images: jax.Array,
  key: jax.Array,
  *,
  max_dims: int = 10_000,
  max_alignment_rows: int = 4096,
  input_ranks: bool = False,
) -> dict[str, np.ndarray]:
  """The subsets ``make_collapse_metrics_fn`` measures with this ``key``:
  ``{'rep/<name>' | 'input/<path>' | 'rows/<path>': sorted int32 indices}`` for every
  matrix with more than ``max_dims`` coordinates / ``max_alignment_rows`` rows (the
  others are kept whole). One abstract trace (``jax.eval_shape``), no compute."""
  draw, drawn = host_subsets(key_seed(key)), {}

  def record(name, n, k):
    drawn[name] = draw(name, n, k)
    return drawn[name]

  labels = jax.ShapeDtypeStruct(images.shape[:1], jnp.int32)
  jax.eval_shape(
    lambda v, x, y: collapse_metrics(
      model,
      v,
      x,
      y,
      temperature=1.0,
      loss_fn=lambda *_: jnp.zeros(()),
      subsets=record,
      max_dims=max_dims,
      top_k=1,
      max_alignment_rows=max_alignment_rows,
      input_ranks=input_ranks,
    ),
    variables,
    images,
    labels,
  )
  return drawn
