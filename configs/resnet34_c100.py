"""ResNet-34 (CIFAR stem) on CIFAR-100; OOD probes on SVHN, NECO detection against CIFAR-10 (Table 2).

Set `--config.loss=mse` for the paper's Table 6."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnet34'
  c.dataset = 'cifar100'
  c.ood_dataset = 'svhn_cropped'
  c.ood_detection_dataset = 'cifar10'
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
