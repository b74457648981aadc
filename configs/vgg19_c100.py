"""VGG-19 (with BatchNorm) on CIFAR-100, paper Tables 3/4; NECO detection against CIFAR-10."""

from configs import base


def get_config():
  c = base.get_config()
  base.vgg_recipe(c)
  c.dataset, c.ood_dataset, c.ood_detection_dataset = 'cifar100', 'svhn_cropped', 'cifar10'
  return c
