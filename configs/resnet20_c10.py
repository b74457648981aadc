"""ResNet-20 (16/32/64) on CIFAR-10, paper Table 4; OOD probes on SVHN."""

from configs import base


def get_config():
  c = base.get_config()
  base.cifar_resnet_recipe(c)
  c.model.name = 'resnet20'
  c.dataset, c.ood_dataset = 'cifar10', 'svhn_cropped'
  return c
