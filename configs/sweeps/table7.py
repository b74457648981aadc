"""Paper Table 7 (App. G): CIFAR-10 temperature sweeps (OOD probes on SVHN).

ResNet-18/20 at T in {1, 10, 100, 1000}; VGG-19 at T in {1, 10, 50, 100}; 3 seeds.
"""

from configs import sweeps

TEMPERATURES = {
  'resnet18_c10': (1.0, 10.0, 100.0, 1000.0),
  'resnet20_c10': (1.0, 10.0, 100.0, 1000.0),
  'vgg19_c10': (1.0, 10.0, 50.0, 100.0),
}


def get_sweep():
  return {
    'config': 'configs/resnet18_c10.py',
    'points': sweeps.temperature_points(TEMPERATURES),
    'analyze': {'ood_dataset': 'svhn_cropped'},
    'slurm': dict(sweeps.CIFAR_SLURM),
  }
