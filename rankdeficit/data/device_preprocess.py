"""The end of the training transform that runs inside the jitted train step.

For augment='imagenet'/'vit' the input pipeline ships uint8 crops (`augment.TrainTransform`
with `device_normalize=True`): normalising to float32 on the host cost ~0.45 ms per 224x224
image, as much as the crop + resize, and a float32 batch is 4x the bytes of a uint8 one to
move host -> device (602 KB vs 150 KB per image). The host still draws every random number
(crop box, flip, colour jitter factors and order) from grain's per-record generator, so the
augmentation of a record depends on (seed, record) only, whatever the devices, and a
resumed run sees the same batches bit for bit.

With `config.device_resize_canvas` > 0 (opt-in; input_pipeline.device_resize_canvas) the
host ships the decoded window of each crop instead of the resized crop, and the step also
resizes (`resize_crops`, Pillow's antialiased bilinear coefficients rebuilt from the box)
and flips: the host's ~0.5 ms Pillow resize becomes two small matrix products per image.

`model_images(batch, preprocess)` is the one place a step turns a batch into model input:
- float32 images (every eval iterator; train batches of augment 'cifar'/'none') are already
  normalised on the host and pass through;
- uint8 images need `preprocess`, a `DeviceNormalize` (from `input_pipeline.device_preprocess`):
  resize + flip when the batch carries crop windows ('resize_box', 'resize_valid', 'flip'),
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
  """uint8 batch -> float32 model input: resize + flip of shipped crop windows (when the
  batch has 'resize_box'; to `image_size`), optional colour jitter, then per-channel
  normalisation with `mean` and `std` in [0, 1] units (hashable: a static jit argument)."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  image_size: int | None = None

  def __call__(self, batch: dict) -> jax.Array:
    images = batch['image']
    if images.dtype != jnp.uint8:
      return images  # normalised on the host already
    x = images.astype(jnp.float32)
    if 'resize_box' in batch:
      if self.image_size is None:
        raise ValueError('batches of crop windows need DeviceNormalize(image_size=...).')
      x = resize_crops(x, batch['resize_box'], batch['resize_valid'], self.image_size)
      x = jnp.where(batch['flip'][:, None, None, None], x[:, :, ::-1], x)
    if 'color_factors' in batch:
      x = color_jitter(x, batch['color_factors'], batch['color_order'])
    return normalize(x, self.mean, self.std)


def model_images(batch: dict, preprocess: DeviceNormalize | None) -> jax.Array:
  """The float model input of `batch` (see the module docstring); raises on a uint8 batch
  without `preprocess` rather than feeding raw grey levels to the model."""
  if batch['image'].dtype == jnp.uint8:
    if preprocess is None:
      raise TypeError(
        'uint8 images (train batches of augment=imagenet/vit) are normalised in '
        'the step: pass preprocess=input_pipeline.device_preprocess(config) to '
        'steps.train_step.'
      )
    return preprocess(batch)
  return batch['image']


def normalize(x: jax.Array, mean, std) -> jax.Array:
  """float32 [..., 3] in [0, 255] -> (x - 255 mean) / (255 std), per channel.

  The constants are built exactly as `augment._pixel_scale` builds them (float32 mean and
  std times 255), so host and device differ only by XLA's own rounding."""
  mean255 = np.asarray(mean, np.float32) * 255.0
  std255 = np.asarray(std, np.float32) * 255.0
  return (x - mean255) / std255


def resize_crops(x: jax.Array, box: jax.Array, valid: jax.Array, size: int) -> jax.Array:
  """Pillow's antialiased bilinear resize of one box per image to (size, size), in float32.

  `x` [B, H, W, C] holds crop windows (`augment.decode_crop_window`) whose first `valid`
  [B, 2] (rows, cols) pixels are image; `box` [B, 4] is (x0, y0, x1, y1) in those pixels.
  Each axis is one matrix product with Pillow's coefficients (`bilinear_weights`), at
  HIGHEST precision: a TPU's default bf16 passes would move pixels by ~1 grey level. The
  host's Pillow rounds to uint8 after each axis; this does not, so the two differ by
  < 1 grey level (tests/data/test_data_device_preprocess.py).
  """
  in_h, in_w = x.shape[1:3]
  rows = jax.vmap(bilinear_weights, (0, 0, 0, None, None))(
    box[:, 1], box[:, 3], valid[:, 0], in_h, size
  )
  cols = jax.vmap(bilinear_weights, (0, 0, 0, None, None))(
    box[:, 0], box[:, 2], valid[:, 1], in_w, size
  )
  highest = jax.lax.Precision.HIGHEST
  x = jnp.einsum('boh,bhwc->bowc', rows, x, precision=highest)
  return jnp.einsum('bpw,bowc->bopc', cols, x, precision=highest)


def bilinear_weights(
  lo: jax.Array, hi: jax.Array, valid: jax.Array, in_size: int, out_size: int
) -> jax.Array:
  """[out_size, in_size] coefficients of Pillow's bilinear resize of [lo, hi) to out_size
  (libImaging/Resample.c `precompute_coeffs`): a triangle of half-width max(1, scale)
  centred on each output pixel, cut to the source pixels Pillow visits (< `valid`, the
  image's edge), normalised to sum 1."""
  scale = (hi - lo) / out_size
  reach = jnp.maximum(scale, 1.0)  # the triangle's support, widened when shrinking
  center = lo + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale
  first = jnp.maximum(jnp.trunc(center - reach + 0.5), 0.0)[:, None]
  stop = jnp.minimum(jnp.trunc(center + reach + 0.5), valid)[:, None]
  pixel = jnp.arange(in_size, dtype=jnp.float32)[None, :]
  w = jnp.maximum(0.0, 1.0 - jnp.abs((pixel - center[:, None] + 0.5) / reach))
  w = jnp.where((pixel >= first) & (pixel < stop), w, 0.0)
  total = w.sum(axis=1, keepdims=True)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


def color_jitter(x: jax.Array, factors: jax.Array, order: jax.Array) -> jax.Array:
  """`augment.color_jitter` on a float32 batch [B, H, W, 3] in [0, 255], with the host's draws.

  `factors` [B, 3] are the (brightness, contrast, saturation) factors and `order` [B, 3] the
  op indices in the order applied, per example. Every op blends with a target and clips to
  [0, 255]: black (brightness), the mean grey level (contrast), the grey image (saturation).
  """
  for k in range(3):
    op = order[:, k]
    f = jnp.take_along_axis(factors, order[:, k : k + 1], axis=1)[:, 0]
    x = _blend(x, op, f)
  return x


def _blend(x: jax.Array, op: jax.Array, f: jax.Array) -> jax.Array:
  # A weighted sum, not a matmul: on TPU a float32 dot defaults to bf16 passes.
  grey = x[..., 0:1] * GREY[0] + x[..., 1:2] * GREY[1] + x[..., 2:3] * GREY[2]
  mean = jnp.mean(grey, axis=(1, 2, 3), keepdims=True)
  op = op[:, None, None, None]
  target = jnp.where(op == 0, 0.0, jnp.where(op == 1, mean, grey))
  return jnp.clip((x - target) * f[:, None, None, None] + target, 0.0, 255.0)
