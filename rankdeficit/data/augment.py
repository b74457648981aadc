"""Per-example image preprocessing as grain transforms (numpy + Pillow, no TensorFlow).

Every function takes one uint8 HWC image (C = 1 or 3) and returns a float32 image of shape
(image_size, image_size, 3), normalised with a per-channel (mean, std) in [0, 1] units.
Randomness comes only from the per-record `np.random.Generator` that grain hands to
`RandomMap.random_map`, so a record's augmentation depends on (seed, epoch, index) and
nothing else: the stream is reproducible and resumable, whatever the number of workers.

Geometry used by evaluation and by `augment='none'/'cifar'` (`fit_to_size`):
- grey images are replicated to 3 channels;
- 28x28 (MNIST) -> 32x32 is a zero pad of 2 pixels per side (the usual OOD recipe);
- fixed-size datasets of any other size are resized to image_size (Pillow bilinear);
- variable-size datasets (ImageNet) are resized so the shorter side is image_size / 0.875
  and centre-cropped (the standard ImageNet evaluation crop).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import grain
import numpy as np
from PIL import Image

EVAL_CROP_FRACTION = 0.875


def to_uint8_hwc(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.dtype != np.uint8:
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return image


def to_rgb(image: np.ndarray) -> np.ndarray:
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  if image.shape[-1] == 4:
    return image[..., :3]
  return image


def resize(image: np.ndarray, height: int, width: int, box=None) -> np.ndarray:
  """Bilinear (antialiased when shrinking) resize of a uint8 HWC image; `box` = (l, t, r, b)."""
  if image.shape[0] == height and image.shape[1] == width and box is None:
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR, box=box))
  return out.reshape(height, width, channels)


def fit_to_size(image, image_size: int, *, variable_size: bool = False) -> np.ndarray:
  """Deterministic geometry: uint8 image of any size -> uint8 (image_size, image_size, 3)."""
  image = to_uint8_hwc(image)
  h, w = image.shape[:2]
  if (h, w) == (image_size, image_size):
    pass
  elif (h, w) == (28, 28) and image_size == 32:
    image = np.pad(image, ((2, 2), (2, 2), (0, 0)))
  elif variable_size:
    short = int(round(image_size / EVAL_CROP_FRACTION))
    nh, nw = (short, max(short, int(round(w * short / h)))) if h <= w else (
        max(short, int(round(h * short / w))), short)
    image = resize(image, nh, nw)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    image = image[top:top + image_size, left:left + image_size]
  else:
    image = resize(image, image_size, image_size)
  return to_rgb(image)


@functools.lru_cache(maxsize=64)
def _pixel_scale(mean: tuple[float, ...], std: tuple[float, ...]):
  # Built once per (mean, std): rebuilding them per image was most of normalize's cost.
  return np.asarray(mean, np.float32) * 255.0, np.asarray(std, np.float32) * 255.0


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8/float [0, 255] image -> float32 ((x / 255) - mean) / std, per channel."""
  mean255, std255 = _pixel_scale(tuple(mean), tuple(std))
  return (np.asarray(image, np.float32) - mean255) / std255


def random_crop_with_padding(image: np.ndarray, rng: np.random.Generator, size: int,
                             padding: int = 4) -> np.ndarray:
  """torchvision RandomCrop(size, padding) with zero padding."""
  h, w, c = image.shape
  # A preallocated zero canvas: np.pad costs ~5x more per small image (profiled).
  padded = np.zeros((h + 2 * padding, w + 2 * padding, c), image.dtype)
  padded[padding:padding + h, padding:padding + w] = image
  top = rng.integers(0, padded.shape[0] - size + 1)
  left = rng.integers(0, padded.shape[1] - size + 1)
  return padded[top:top + size, left:left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return image[:, ::-1] if rng.random() < 0.5 else image


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """torchvision RandomResizedCrop: area fraction ~ U(scale), log aspect ~ U(log ratio)."""
  height, width = image.shape[:2]
  area = height * width
  log_ratio = np.log(ratio)
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(np.sqrt(target_area * aspect)))
    h = int(round(np.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      break
  else:  # Fallback: central crop with the aspect ratio clamped to `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
      w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
      h, w = height, int(round(height * max(ratio)))
    else:
      w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
  return resize(image, size, size, box=(left, top, left + w, top + h))


def _grey(image: np.ndarray) -> np.ndarray:
  return image @ np.asarray([0.299, 0.587, 0.114], np.float32)


def color_jitter(image: np.ndarray, rng: np.random.Generator,
                 strength=(0.6, 1.4)) -> np.ndarray:
  """torchvision ColorJitter(brightness, contrast, saturation) with factors ~ U(strength),
  applied in a random order; uint8 RGB in, float32 [0, 255] out."""
  x = image.astype(np.float32)
  factors = rng.uniform(strength[0], strength[1], size=3)
  for op in rng.permutation(3):
    f = np.float32(factors[op])
    if op == 0:  # brightness: blend with black
      x = x * f
    elif op == 1:  # contrast: blend with the mean grey level
      x = (x - _grey(x).mean()) * f + _grey(x).mean()
    else:  # saturation: blend with the grey image
      g = _grey(x)[..., None]
      x = (x - g) * f + g
    x = np.clip(x, 0.0, 255.0)
  return x


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """What every transform needs to know: output size and normalisation."""
  image_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  variable_size: bool = False  # the source has images of varying size (ImageNet)


class TrainTransform(grain.transforms.RandomMap):
  """{'image': uint8, 'label'} -> {'image': float32 normalised, 'label': int32}."""

  def __init__(self, augment: str, prep: Preprocess):
    if augment not in ('cifar', 'imagenet', 'vit', 'none'):
      raise ValueError(f"Unknown augment {augment!r}; choose cifar|imagenet|vit|none.")
    self.augment = augment
    self.prep = prep

  def random_map(self, element, rng: np.random.Generator):
    p = self.prep
    image = to_uint8_hwc(element['image'])
    if self.augment == 'none':
      image = fit_to_size(image, p.image_size, variable_size=p.variable_size)
    elif self.augment == 'cifar':
      image = fit_to_size(image, p.image_size, variable_size=p.variable_size)
      image = random_flip(random_crop_with_padding(image, rng, p.image_size, 4), rng)
    elif self.augment == 'imagenet':
      image = to_rgb(random_resized_crop(image, rng, p.image_size, (0.08, 1.0)))
      image = color_jitter(random_flip(image, rng), rng)
    else:  # vit
      image = to_rgb(random_resized_crop(image, rng, p.image_size, (0.05, 1.0)))
      image = random_flip(image, rng)
    return {'image': normalize(image, p.mean, p.std),
            'label': np.int32(element['label'])}


class EvalTransform(grain.transforms.Map):
  """Deterministic geometry + normalisation; passes `mask` through (padding records)."""

  def __init__(self, prep: Preprocess):
    self.prep = prep

  def map(self, element):
    p = self.prep
    if not element['mask']:
      image = np.zeros((p.image_size, p.image_size, 3), np.float32)
    else:
      image = normalize(fit_to_size(element['image'], p.image_size,
                                    variable_size=p.variable_size), p.mean, p.std)
    return {'image': image, 'label': np.int32(element['label']),
            'mask': np.bool_(element['mask'])}
