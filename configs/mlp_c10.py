"""MLP (8 x 2048, ReLU, PyTorch init) on CIFAR-10, paper Table 4; OOD probes on SVHN."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'mlp'
  c.model.width = 2048
  c.model.depth = 8
  c.model.init = 'pytorch'
  c.dataset = 'cifar10'
  c.ood_dataset = 'svhn_cropped'
  c.learning_rate = 0.05
  c.momentum = 0.0
  c.weight_decay = 0.0
  c.num_epochs = 100
  c.lr_milestones = ()
  c.batch_size = 128
  return c
