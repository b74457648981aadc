"""ResNet-18 (CIFAR stem) on CIFAR-100 (Table 2).

OOD probes on SVHN, NECO detection against CIFAR-10.
"""

from configs import base


def get_config():
  c = base.get_config()
  base.cifar_resnet_recipe(c)
  c.model.name = 'resnet18'
  c.dataset, c.ood_dataset, c.ood_detection_dataset = 'cifar100', 'svhn_cropped', 'cifar10'
  return c
