"""Optimisers as in the paper: SGD with momentum and coupled weight decay, multi-step LR."""

import ml_collections
import optax

OPTIMIZER_NAMES = ('sgd', 'adam')


def learning_rate_schedule(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
  """Multi-step decay by `lr_gamma` at `lr_milestones` (in epochs), optional linear warmup.

  Milestones are in epochs, as in `torch.optim.lr_scheduler.MultiStepLR` stepped per epoch.
  """
  boundaries = {int(m * steps_per_epoch): config.lr_gamma for m in config.lr_milestones}
  decay = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  if config.warmup_epochs <= 0:
    return decay
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def create_optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
  """SGD(momentum, nesterov) or Adam, with weight decay coupled into the gradient.

  Coupled decay (g <- g + wd * w before momentum) is what `torch.optim.SGD/Adam` do and what
  the paper's PyTorch code used; it applies to every parameter, BatchNorm and biases included,
  as PyTorch does by default. The learning rate is injected so it can be logged.
  """
  if config.optimizer not in OPTIMIZER_NAMES:
    raise ValueError(f'Unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZER_NAMES}.')
  schedule = learning_rate_schedule(config, steps_per_epoch)

  def make(learning_rate):
    if config.optimizer == 'sgd':
      base = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
    else:
      base = optax.adam(learning_rate)
    return optax.chain(optax.add_decayed_weights(config.weight_decay), base)

  return optax.inject_hyperparams(make)(learning_rate=schedule)
