"""Offline quickstart: a small MLP on the UCI handwritten digits bundled with scikit-learn.

Needs no data_dir and no network; see rankdeficit/quickstart.py."""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'mlp'
  c.model.width = 256
  c.model.depth = 4
  # Kaiming init starts at a logits norm of ~3; under the PyTorch default init (~0.13) the
  # T=100 run stays stuck near chance for this short budget.
  c.model.init = 'kaiming'
  c.dataset = 'digits'
  c.ood_dataset = ''
  c.augment = 'none'
  c.image_size = 16
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.num_epochs = 30
  c.lr_milestones = ()
  c.batch_size = 64
  c.eval_batch_size = 120
  c.metrics_batch_size = 120
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.metrics_every_steps = 0
  return c
