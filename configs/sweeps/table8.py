"""Paper Table 8 (App. G): CIFAR-100 temperature sweeps (OOD probes on SVHN).

ResNet-18/34 at T in {1, 10, 100, 200}; VGG-19 at T in {1, 10, 50, 100}; 3 seeds.
"""

from configs import sweeps

TEMPERATURES = {
  'resnet18_c100': (1.0, 10.0, 100.0, 200.0),
  'resnet34_c100': (1.0, 10.0, 100.0, 200.0),
  'vgg19_c100': (1.0, 10.0, 50.0, 100.0),
}


def get_sweep():
  return {
    'config': 'configs/resnet18_c100.py',
    'points': sweeps.temperature_points(TEMPERATURES),
    'analyze': {'ood_dataset': 'svhn_cropped'},
    'slurm': dict(sweeps.CIFAR_SLURM),
  }
