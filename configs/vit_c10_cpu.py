"""CPU-sized ViT trained from scratch on real offline CIFAR-10 (JPEG copy, 10k images), OOD
probes on MNIST: the attention-temperature experiment (issue 12.1,
experiments/attention_temperature.py).

Model `vit_mini` (rankdeficit/models/vit.py): 4x4 patches of the 32x32 image -> 64 tokens
+ a class token, width 64, 4 pre-LN blocks of 4 heads (head dim 16), MLP 128, Xavier init,
no dropout. Recipe: Adam (ViTs train poorly with plain SGD at this budget), lr 1e-3, x0.1
after 0.75 epochs, no warmup (none was needed in our timed runs), batch 64, no weight decay
(the optimiser's decay is coupled L2, not AdamW's decoupled one), no augmentation, ONE
epoch = 156 steps (batch 64 rather than 128: twice the updates for the same compute). Sized
so that the 18 runs of the experiment fit about 25 minutes of 2 CPU cores (see
experiments/attention_temperature.py): a short-budget ViT (~30-40% test accuracy), not a
trained one. Evaluation on the whole test split at the end only; the collapse monitor
(attention rank / erank / entropy / logits norm per layer, the figure's curves) every 20
steps (9 records) on the first 64 test images, at <= 1,024 coordinates per representation.

Import the data once: python -m tools.import_data all --data_dir=data/tfds
"""

from configs import base


def get_config():
  c = base.get_config()
  base.cpu_run(c)
  c.model.name, c.model.init = 'vit_mini', 'xavier'
  c.dataset, c.ood_dataset = 'cifar10_jpeg', 'mnist'
  c.train_subset, c.augment, c.batch_size = 10000, 'none', 64
  c.optimizer, c.learning_rate, c.weight_decay = 'adam', 1e-3, 0.0
  c.num_epochs, c.warmup_epochs, c.lr_milestones, c.lr_gamma = 1, 0, (0.75,), 0.1
  c.eval_every_steps = 10**9  # the end of training only: a pass over 10k test images is costly
  c.metrics_every_steps, c.metrics_batch_size, c.max_feature_dims = 20, 64, 1024
  c.log_every_steps, c.checkpoint_every_steps = 26, 312
  return c
