"""ResNet-18 (CIFAR stem) on CIFAR-10, paper Table 4; OOD probes on SVHN, NECO vs CIFAR-100."""

from configs import base


def get_config():
  c = base.get_config()
  base.cifar_resnet_recipe(c)
  c.model.name = 'resnet18'
  c.dataset, c.ood_dataset, c.ood_detection_dataset = 'cifar10', 'svhn_cropped', 'cifar100'
  return c
