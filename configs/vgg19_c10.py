"""VGG-19 (with BatchNorm; set model.name=vgg19 for none) on CIFAR-10, paper Table 3/4."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'vgg19_bn'
  c.model.init = 'pytorch'
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.num_epochs = 160
  c.lr_milestones = (80, 120)
  c.batch_size = 128
  c.dataset = 'cifar10'
  c.ood_dataset = 'svhn_cropped'
  return c
