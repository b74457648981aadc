"""Paper Table 9 (App. G): ImageNet-1k, ResNet-34/50 at T in {1, 10, 100, 1000}, 3 seeds.

OOD probes on CIFAR-100 (the configs' ood_dataset); probes train on a fixed random
100,000-image subset of the train split, SR uses all 50,000 validation images. Each point
is one 8-GPU node for up to 3 days (120 epochs); ImageNet must be prepared on storage every
node reads (README "Where ImageNet lives").
"""


def get_sweep():
  return {
    'config': 'configs/resnet50_in1k.py',
    'points': [
      {'config': f'configs/{name}.py', 'temperature': t, 'seed': seed}
      for name in ('resnet34_in1k', 'resnet50_in1k')
      for t in (1.0, 10.0, 100.0, 1000.0)
      for seed in range(3)
    ],
    'analyze': {'max_train_examples': 100_000},
    'slurm': {
      'time': 3 * 24 * 60,
      'nodes': 1,
      'gpus_per_node': 8,
      'cpus_per_task': 64,
      'mem': '480GB',
      'array_parallelism': 8,
    },
  }
