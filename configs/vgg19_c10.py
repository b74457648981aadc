"""VGG-19 (with BatchNorm; set model.name=vgg19 for none) on CIFAR-10, paper Tables 3/4."""

from configs import base


def get_config():
  c = base.get_config()
  base.vgg_recipe(c)
  c.dataset, c.ood_dataset = 'cifar10', 'svhn_cropped'
  return c
