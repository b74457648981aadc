"""Paper Table 6: ResNet-34 on CIFAR-100 with the MSE loss on softmax(logits / T), T=1 vs 100."""


def get_sweep():
  return {
    'config': 'configs/resnet34_c100.py',
    'points': [
      {'loss': 'mse', 'temperature': t, 'seed': seed} for t in (1.0, 100.0) for seed in range(3)
    ],
    'analyze': {},
    'slurm': {
      'time': 12 * 60,
      'gpus_per_node': 1,
      'cpus_per_task': 8,
      'mem': '32GB',
      'array_parallelism': 6,
    },
  }
