"""Sweep definitions for `python -m rankdeficit.sweep` (see rankdeficit/sweep.py)."""


def temperature_points(temperatures: dict[str, tuple[float, ...]], seeds: int = 3) -> list[dict]:
  """Override dicts for every (config in configs/, its temperatures, seed) of a T-sweep."""
  return [
    {'config': f'configs/{name}.py', 'temperature': t, 'seed': seed}
    for name, temps in temperatures.items()
    for t in temps
    for seed in range(seeds)
  ]


# One GPU per CIFAR point (Tables 6-8).
CIFAR_SLURM = {
  'time': 12 * 60,
  'gpus_per_node': 1,
  'cpus_per_task': 8,
  'mem': '32GB',
  'array_parallelism': 12,
}
