"""CPU-sized MLP (width 512 > 200 classes) on Tiny-ImageNet-200 at 32x32: the many-class set where
the solution rank SR can drop below the number of classes. OOD: CIFAR-10 (JPEG copy)."""

from configs import base


def get_config():
  c = base.get_config()
  base.cpu_run(base.mlp_recipe(c))
  c.model.width, c.model.depth = 512, 4
  c.dataset, c.ood_dataset = 'tiny_imagenet32', 'cifar10_jpeg'
  c.augment, c.momentum, c.num_epochs = 'none', 0.9, 15
  return c
