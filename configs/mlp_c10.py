"""MLP (8 x 2048, ReLU, PyTorch init) on CIFAR-10, paper Table 4; OOD probes on SVHN."""
from configs import base


def get_config():
  c = base.get_config()
  base.mlp_recipe(c)
  c.model.width, c.model.depth = 2048, 8
  c.dataset, c.ood_dataset = 'cifar10', 'svhn_cropped'
  return c
