"""CPU-sized MLP (8 x 512) on real offline CIFAR-10 (JPEG copy), OOD probes on MNIST.

Import the data once: python -m tools.import_data all --data_dir=data/tfds"""
from configs import base


def get_config():
  c = base.get_config()
  base.cpu_run(base.mlp_recipe(c))
  c.model.width, c.model.depth = 512, 8
  c.dataset, c.ood_dataset = 'cifar10_jpeg', 'mnist'
  c.train_subset, c.augment, c.num_epochs = 10000, 'none', 20
  return c
