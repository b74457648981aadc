"""Train-step throughput of our jitted step, side by side with the PyTorch yardstick.

  python -m tools.benchmark --models=mlp,resnet20,resnet18,vgg19 --batch=128 \
      --torch_ref=../shared/bench/torch_ref.py

For each model it times our jitted train step (temperature-scaled CE at T=100, SGD with
momentum 0.9 and weight decay 1e-4, as torch_ref.py does) on random 32x32x3 batches after
compilation, then runs `torch_ref.py MODEL BATCH STEPS` in a subprocess on the same machine
and prints both figures and their ratio. The model names follow torch_ref.py ('vgg19' there
is VGG-19 with BatchNorm, our 'vgg19_bn').
"""
import argparse
import functools
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from rankdeficit import losses, models, optim, steps

# torch_ref.py name -> our model name.
TORCH_NAMES = {'mlp': 'mlp', 'resnet18': 'resnet18', 'resnet20': 'resnet20',
               'resnet34': 'resnet34', 'vgg19': 'vgg19_bn'}


def time_jax_step(name: str, batch: int, num_steps: int, dtype: str = 'float32',
                  warmup: int = 3) -> float:
  """Seconds per train step of our jitted step on the default device."""
  config = base.get_config()
  config.model.name = TORCH_NAMES[name]
  config.model.dtype = dtype
  config.lr_milestones = ()
  model = models.create_model(config.model, num_classes=10)
  tx = optim.create_optimizer(config, steps_per_epoch=100)
  state = jax.jit(functools.partial(steps.create_train_state, model=model, tx=tx,
                                    image_shape=(32, 32, 3)))(jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, loss_fn=losses.cross_entropy,
      temperature_fn=lambda _: 100.0), donate_argnums=0)
  rng = np.random.default_rng(0)
  data = {'image': jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, 10, batch), jnp.int32)}
  for _ in range(warmup):
    state, metrics = step(state, data)
  jax.block_until_ready((state, metrics))
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, data)
  jax.block_until_ready((state, metrics))
  return (time.perf_counter() - start) / num_steps


def time_torch_step(torch_ref: str, name: str, batch: int, num_steps: int) -> float | None:
  """Seconds per step reported by torch_ref.py, or None if it cannot run here."""
  out = subprocess.run([sys.executable, torch_ref, name, str(batch), str(num_steps)],
                       capture_output=True, text=True, check=False)
  match = re.search(r'ms/step=([\d.]+)', out.stdout)
  if not match:
    print(f'  torch_ref failed for {name}: {out.stderr.strip()[-300:]}', file=sys.stderr)
    return None
  return float(match.group(1)) / 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='mlp,resnet20,resnet18,vgg19')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--torch_ref', default=os.path.join('..', 'shared', 'bench', 'torch_ref.py'),
                      help="path to torch_ref.py ('' to skip PyTorch)")
  args = parser.parse_args()
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  print('| model | batch | jax img/s | jax ms/step | torch img/s | torch ms/step | jax/torch |')
  print('|---|---|---|---|---|---|---|')
  for name in args.models.split(','):
    jax_s = time_jax_step(name, args.batch, args.steps, args.dtype)
    torch_s = (time_torch_step(args.torch_ref, name, args.batch, args.steps)
               if args.torch_ref and os.path.exists(args.torch_ref) else None)
    t_ips = f'{args.batch / torch_s:.1f}' if torch_s else '-'
    t_ms = f'{torch_s * 1e3:.1f}' if torch_s else '-'
    ratio = f'{torch_s / jax_s:.2f}x' if torch_s else '-'
    print(f'| {name} | {args.batch} | {args.batch / jax_s:.1f} | {jax_s * 1e3:.1f} | '
          f'{t_ips} | {t_ms} | {ratio} |', flush=True)


if __name__ == '__main__':
  main()
