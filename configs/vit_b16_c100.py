"""Fine-tune an ImageNet-21k ViT-B/16 on CIFAR-100 (Table 2), NECO detection against CIFAR-10."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'vit_b16'
  c.model.pretrained_path = ''  # local ImageNet-21k ViT-B/16 .npz (required)
  c.augment = 'vit'
  c.image_size = 224
  # Fine-tuning budget: the paper does not list it; these are our defaults.
  c.learning_rate = 0.01
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.num_epochs = 10
  c.lr_milestones = (5, 8)
  c.warmup_epochs = 1
  c.batch_size = 128
  c.eval_batch_size = 256
  c.metrics_batch_size = 256
  c.log_every_steps = 50
  c.dataset = 'cifar100'
  c.ood_dataset = 'cifar10'
  return c
