"""CPU-sized ResNet-20 on real offline CIFAR-10 (JPEG copy, 10k images), OOD probes on MNIST."""

from configs import base


def get_config():
  c = base.get_config()
  base.cpu_run(base.cifar_resnet_recipe(c))
  c.model.name = 'resnet20'
  c.dataset, c.ood_dataset = 'cifar10_jpeg', 'mnist'
  c.train_subset, c.num_epochs, c.lr_milestones = 10000, 10, (5, 8)
  return c
