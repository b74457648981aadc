"""CPU-sized ResNet-20 on real offline CIFAR-10 (JPEG copy), OOD probes on MNIST."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnet20'
  c.dataset = 'cifar10_jpeg'
  c.ood_dataset = 'mnist'
  c.data_dir = 'data/tfds'
  c.train_subset = 10000
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.num_epochs = 164
  c.lr_milestones = (82, 123)
  c.lr_gamma = 0.1
  c.batch_size = 128
  c.model.stem = 'cifar'
  c.model.init = 'kaiming'
  c.num_epochs = 10
  c.lr_milestones = (5, 8)
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.metrics_every_steps = 500
  return c
