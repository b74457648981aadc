"""Paper Table 1: baseline (T=1) vs low logit norm (T=100), every model/dataset, 3 seeds.

ImageNet probes train on a fixed random 100,000-image subset of the train split (the
paper's ImageNet-1k SR uses 100,000 samples); SR always uses the whole test split. The
ImageNet-1k rows need ~3 GPU-days each on 8 GPUs: see table9.py for their resources.
"""

CONFIGS = (
  'mlp_c10',
  'resnet18_c10',
  'resnet20_c10',
  'resnet18_c100',
  'resnet34_c100',
  'resnet34_in100',
  'resnet50_in100',
  'resnet34_in1k',
  'resnet50_in1k',
)


def get_sweep():
  return {
    'config': 'configs/resnet18_c10.py',
    'points': [
      {'config': f'configs/{name}.py', 'temperature': t, 'seed': seed}
      for name in CONFIGS
      for t in (1.0, 100.0)
      for seed in range(3)
    ],
    'analyze': {'max_train_examples': 100_000},
    # One node, 8 GPUs per point (the ImageNet rows set the budget; CIFAR points use
    # the same allocation for simplicity -- split the sweep to pack them tighter).
    'slurm': {
      'time': 3 * 24 * 60,
      'nodes': 1,
      'gpus_per_node': 8,
      'cpus_per_task': 64,
      'mem': '480GB',
      'array_parallelism': 8,
    },
  }
