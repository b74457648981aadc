"""CPU-sized MLP on real offline CIFAR-10 (JPEG copy), OOD probes on MNIST.

Import the data once: python -m tools.import_data cifar10_jpeg mnist --data_dir=data/tfds"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'mlp'
  c.model.width = 512
  c.model.depth = 8
  c.model.init = 'pytorch'
  c.dataset = 'cifar10_jpeg'
  c.ood_dataset = 'mnist'
  c.data_dir = 'data/tfds'
  c.train_subset = 10000
  c.augment = 'none'
  c.learning_rate = 0.05
  c.momentum = 0.0
  c.weight_decay = 0.0
  c.num_epochs = 20
  c.lr_milestones = ()
  c.batch_size = 128
  c.eval_batch_size = 500
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.metrics_every_steps = 500
  return c
