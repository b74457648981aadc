"""CPU-sized MLP (width 512 > 200 classes) on Tiny-ImageNet-200 at 32x32: the many-class set where
solution rank SR can drop below the number of classes. OOD: CIFAR-10 (JPEG copy)."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'mlp'
  c.model.width = 512
  c.model.depth = 4
  c.model.init = 'pytorch'
  c.dataset = 'tiny_imagenet32'
  c.ood_dataset = 'cifar10_jpeg'
  c.data_dir = 'data/tfds'
  c.augment = 'none'
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.num_epochs = 15
  c.lr_milestones = ()
  c.batch_size = 128
  c.eval_batch_size = 500
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.metrics_every_steps = 500
  return c
