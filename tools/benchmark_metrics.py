"""Benchmark of the metrics library and the train-time monitor (not a test).

  python -m tools.benchmark_metrics [--rows 10000 --cols 2048] [--large 10000] [--repeats 3]

1. ``metrics.numerical_rank`` (jitted; float32 SVD of the matrix itself) on a random
   ``rows x cols`` float32 matrix of known rank vs ``torch.linalg.matrix_rank`` on the same
   matrix in the same process (PyTorch is imported here only, and only if installed).
2. Optionally (``--large N``) ``numerical_rank`` of an ``N x N`` float32 matrix.
3. The monitor suite (``monitor.make_collapse_metrics_fn``) on one batch of a small MLP
   vs one jitted SGD train step of the same model and batch: the cost ratio tells how
   often the monitor can run for a < 5% overhead.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rankdeficit import metrics, monitor


def _time(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up / compile
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _test_matrix(rows: int, cols: int, rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    left = rng.standard_normal((rows, rank), dtype=np.float32)
    right = rng.standard_normal((rank, cols), dtype=np.float32)
    return left @ right


def bench_rank(rows: int, cols: int, repeats: int) -> dict:
    rank = min(rows, cols) // 2
    x = _test_matrix(rows, cols, rank)
    xj = jnp.asarray(x)
    rank_fn = jax.jit(metrics.numerical_rank)
    t_jax, r_jax = _time(lambda: rank_fn(xj), repeats)
    result = {"shape": (rows, cols), "true_rank": rank, "jax_s": t_jax, "jax_rank": int(r_jax)}
    try:
        import torch  # only here: never in package code or tests
    except ImportError:
        result["torch"] = "not installed"
        return result
    xt = torch.from_numpy(x)
    torch.linalg.matrix_rank(xt)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r_torch = int(torch.linalg.matrix_rank(xt))
        times.append(time.perf_counter() - t0)
    result.update(torch_s=float(np.median(times)), torch_rank=r_torch, torch_threads=torch.get_num_threads())
    return result


def bench_monitor(batch: int, width: int, depth: int, repeats: int) -> dict:
    import flax.linen as nn
    import optax

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = x.reshape(x.shape[0], -1)
            reps = {}
            for i in range(depth):
                x = nn.relu(nn.Dense(width)(x))
                reps[f"layer{i}"] = x
            return nn.Dense(10)(x), reps

    def loss_fn(logits, labels, temperature):
        return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, labels).mean()

    model = MLP()
    images = jax.random.normal(jax.random.PRNGKey(0), (batch, 32, 32, 3))
    labels = jnp.arange(batch) % 10
    variables = model.init(jax.random.PRNGKey(1), images)
    tx = optax.sgd(0.05)
    opt_state = tx.init(variables["params"])

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss(p):
            return loss_fn(model.apply({"params": p}, images, train=True)[0], labels, 100.0)

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    t_step, _ = _time(lambda: train_step(variables["params"], opt_state, images, labels), repeats)
    fn = monitor.make_collapse_metrics_fn(model, loss_fn, max_dims=10_000, top_k=15)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(variables, images, labels, 100.0, jax.random.PRNGKey(3)))
    t_compile = time.perf_counter() - t0
    t_mon, out = _time(lambda: fn(variables, images, labels, 100.0, jax.random.PRNGKey(3)), repeats)
    return {
        "model": f"MLP {depth}x{width}, batch {batch}, 32x32x3 inputs",
        "train_step_s": t_step,
        "monitor_s": t_mon,
        "monitor_first_call_s (compile)": t_compile,
        "monitor / step": t_mon / t_step,
        "min steps between monitor calls for <5% overhead": int(np.ceil(t_mon / (0.05 * t_step))),
        "num_metrics": len(out),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--large", type=int, default=0, help="also time an N x N matrix")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--skip_monitor", action="store_true")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print("numerical_rank:", bench_rank(args.rows, args.cols, args.repeats))
    if args.large:
        print("numerical_rank (large):", bench_rank(args.large, args.large, 1))
    if not args.skip_monitor:
        print("monitor:", bench_monitor(args.batch, args.width, args.depth, args.repeats))


if __name__ == "__main__":
    main()
