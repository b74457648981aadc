"""ResNet-50 on ImageNet-1k, paper Table 4; OOD: CIFAR-100."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnet50'
  c.dataset = 'imagenet2012'
  c.augment = 'imagenet'
  c.image_size = 224
  c.model.stem = 'imagenet'
  c.model.init = 'kaiming'
  c.learning_rate = 1.6
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.num_epochs = 120
  c.lr_milestones = (30, 60, 90)
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.num_workers = 8
  c.ood_dataset = 'cifar100'
  c.log_every_steps = 500
  c.checkpoint_every_steps = 2500
  c.metrics_every_steps = 5000
  return c
