"""ResNet-18 (CIFAR stem) on CIFAR-10, paper Table 4; OOD probes on SVHN."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnet18'
  c.dataset = 'cifar10'
  c.ood_dataset = 'svhn_cropped'
  c.ood_detection_dataset = 'cifar100'
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.num_epochs = 164
  c.lr_milestones = (82, 123)
  c.lr_gamma = 0.1
  c.batch_size = 128
  c.model.stem = 'cifar'
  c.model.init = 'kaiming'
  return c
