"""CPU-sized MLP (width 512, the paper's depth: 7 hidden ReLU layers + the classifier, see
configs/mlp_c10.py) on real offline CIFAR-10 (JPEG copy), OOD probes on MNIST.

Import the data once: python -m tools.import_data all --data_dir=data/tfds"""

from configs import base
from configs import mlp_c10


def get_config():
  c = base.get_config()
  base.cpu_run(base.mlp_recipe(c))
  c.model.width, c.model.depth = 512, mlp_c10.DEPTH_BY_READING['layers8']
  c.dataset, c.ood_dataset = 'cifar10_jpeg', 'mnist'
  c.train_subset, c.augment, c.num_epochs = 10000, 'none', 20
  return c
