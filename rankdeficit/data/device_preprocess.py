"""The end of the training transform that runs inside the jitted train step.

For augment='imagenet'/'vit' the input pipeline ships uint8 crops (`augment.TrainTransform`
with `device_normalize=True`): normalising to float32 on the host cost ~0.45 ms per 224x224
image, as much as the crop + resize, and a float32 batch is 4x the bytes of a uint8 one to
move host -> device (602 KB vs 150 KB per image). The host still draws every random number
(crop box, flip, colour jitter factors and order) from grain's per-record generator, so the
augmentation of a record depends on (seed, record) only, whatever the devices, and a
resumed run sees the same batches bit for bit.

`model_images(batch, preprocess)` is the one place a step turns a batch into model input:
- float32 images (every eval iterator; train batches of augment 'cifar'/'none') are already
  normalised on the host and pass through;
- uint8 images need `preprocess`, a `DeviceNormalize` (from `input_pipeline.device_preprocess`):
  colour jitter when the batch carries its draws ('color_factors', 'color_order'), then
  ((x / 255) - mean) / std, in float32 as on the host (`augment.color_jitter`,
  `augment.normalize`), up to float32 rounding.
The dtype is static under `jit`, so the choice is made at trace time.

Only jax and numpy here: `steps.py` imports this without grain, Pillow or TensorFlow.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert('L') and augment._grey


@dataclasses.dataclass(frozen=True)
class DeviceNormalize:
  """uint8 batch -> float32 model input: optional colour jitter, then per-channel
  normalisation with `mean` and `std` in [0, 1] units (hashable: a static jit argument)."""
  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  def __call__(self, batch: dict) -> jax.Array:
    images = batch['image']
    if images.dtype != jnp.uint8:
      return images  # normalised on the host already
    x = images.astype(jnp.float32)
    if 'color_factors' in batch:
      x = color_jitter(x, batch['color_factors'], batch['color_order'])
    return normalize(x, self.mean, self.std)


def model_images(batch: dict, preprocess: DeviceNormalize | None) -> jax.Array:
  """The float model input of `batch` (see the module docstring); raises on a uint8 batch
  without `preprocess` rather than feeding raw grey levels to the model."""
  if batch['image'].dtype == jnp.uint8:
    if preprocess is None:
      raise TypeError('uint8 images (train batches of augment=imagenet/vit) are normalised in '
                      'the step: pass preprocess=input_pipeline.device_preprocess(config) to '
                      'steps.train_step.')
    return preprocess(batch)
  return batch['image']


def normalize(x: jax.Array, mean, std) -> jax.Array:
  """float32 [..., 3] in [0, 255] -> (x - 255 mean) / (255 std), per channel.

  The constants are built exactly as `augment._pixel_scale` builds them (float32 mean and
  std times 255), so host and device differ only by XLA's own rounding."""
  mean255 = np.asarray(mean, np.float32) * 255.0
  std255 = np.asarray(std, np.float32) * 255.0
  return (x - mean255) / std255


def color_jitter(x: jax.Array, factors: jax.Array, order: jax.Array) -> jax.Array:
  """`augment.color_jitter` on a float32 batch [B, H, W, 3] in [0, 255], with the host's draws.

  `factors` [B, 3] are the (brightness, contrast, saturation) factors and `order` [B, 3] the
  op indices in the order applied, per example. Every op blends with a target and clips to
  [0, 255]: black (brightness), the mean grey level (contrast), the grey image (saturation).
  """
  for k in range(3):
    op = order[:, k]
    f = jnp.take_along_axis(factors, order[:, k:k + 1], axis=1)[:, 0]
    x = _blend(x, op, f)
  return x


def _blend(x: jax.Array, op: jax.Array, f: jax.Array) -> jax.Array:
  # A weighted sum, not a matmul: on TPU a float32 dot defaults to bf16 passes.
  grey = x[..., 0:1] * GREY[0] + x[..., 1:2] * GREY[1] + x[..., 2:3] * GREY[2]
  mean = jnp.mean(grey, axis=(1, 2, 3), keepdims=True)
  op = op[:, None, None, None]
  target = jnp.where(op == 0, 0.0, jnp.where(op == 1, mean, grey))
  return jnp.clip((x - target) * f[:, None, None, None] + target, 0.0, 255.0)
