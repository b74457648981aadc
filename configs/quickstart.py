"""Offline quickstart: a small MLP on the UCI handwritten digits bundled with scikit-learn.

Needs no data_dir and no network; see rankdeficit/quickstart.py."""

from configs import base


def get_config():
  c = base.get_config()
  base.mlp_recipe(c)
  # Kaiming init starts at a logits norm of ~3; under the PyTorch default init (~0.13) the
  # T=100 run stays stuck near chance for this short budget.
  c.model.init, c.model.width, c.model.depth = 'kaiming', 256, 4
  c.dataset, c.ood_dataset, c.augment, c.image_size = 'digits', '', 'none', 16
  c.momentum, c.num_epochs = 0.9, 30
  c.batch_size, c.eval_batch_size, c.metrics_batch_size = 64, 120, 120
  c.log_every_steps, c.checkpoint_every_steps, c.metrics_every_steps = 100, 1000, 0
  return c
