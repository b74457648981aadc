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

`TrainTransform` also takes records whose 'image' is still encoded (bytes: the input
pipeline reads variable-size datasets with tfds `SkipDecoding` for augment='imagenet'/'vit').
Then `decode_random_resized_crop` samples the crop box from the image header first and
decodes only what the crop needs: a JPEG is decoded at the largest DCT reduction (1/2, 1/4,
1/8, Pillow's `draft`) that keeps the crop at least DRAFT_GAP x image_size pixels high and
wide, and cropped + resized in one Pillow call. The crop distribution and random stream are
those of `random_resized_crop`; pixels differ from full decoding + resize only by the
DCT-domain downscale (~1 grey level on average, tests/data/test_data_augment_encoded.py).

With `device_normalize=True` (augment imagenet/vit; what the input pipeline uses) the
transform stops at the uint8 crop + flip and returns the colour jitter's random draws
(`draw_color_jitter`) beside it; the train step applies them and normalises on the device
(rankdeficit/data/device_preprocess.py), with the same draws from the same generator.
With `device_resize_canvas` too it stops one step earlier: `decode_crop_window` ships the
decoded window around the crop box, and the device resizes and flips.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from typing import Sequence

import grain
import numpy as np
from PIL import Image

EVAL_CROP_FRACTION = 0.875
DRAFT_GAP = 2.0  # JPEG crops are decoded at >= DRAFT_GAP x the output size (see below)


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
    nh, nw = (
      (short, max(short, int(round(w * short / h))))
      if h <= w
      else (max(short, int(round(h * short / w))), short)
    )
    image = resize(image, nh, nw)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    image = image[top : top + image_size, left : left + image_size]
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
  out = np.array(image, np.float32)  # a copy: the in-place ops below must not touch `image`
  np.subtract(out, mean255, out=out)
  return np.divide(out, std255, out=out)


def random_crop_with_padding(
  image: np.ndarray, rng: np.random.Generator, size: int, padding: int = 4
) -> np.ndarray:
  """torchvision RandomCrop(size, padding) with zero padding."""
  h, w, c = image.shape
  # A preallocated zero canvas: np.pad costs ~5x more per small image (profiled).
  padded = np.zeros((h + 2 * padding, w + 2 * padding, c), image.dtype)
  padded[padding : padding + h, padding : padding + w] = image
  top = rng.integers(0, padded.shape[0] - size + 1)
  left = rng.integers(0, padded.shape[1] - size + 1)
  return padded[top : top + size, left : left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return image[:, ::-1] if rng.random() < 0.5 else image


def sample_crop_box(
  height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
  """torchvision RandomResizedCrop's box (left, top, w, h): area fraction ~ U(scale), log
  aspect ~ U(log ratio), 10 tries, then a central crop with the aspect clamped to `ratio`."""
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
      return left, top, w, h
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(
  image: np.ndarray, rng: np.random.Generator, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
  """torchvision RandomResizedCrop of a decoded uint8 HWC image."""
  left, top, w, h = sample_crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
  return resize(image, size, size, box=(left, top, left + w, top + h))


def decode_random_resized_crop(
  data: bytes, rng: np.random.Generator, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
  """`random_resized_crop` of an encoded image, decoding only what the crop needs.

  Returns uint8 (size, size, 3). The box is drawn from the header's size (same random
  stream as `random_resized_crop`); a JPEG is then decoded at the largest DCT reduction
  that leaves the box >= DRAFT_GAP * `size` pixels each way (see the module docstring).
  """
  return np.asarray(_decode_random_resized_crop(data, rng, size, scale, ratio))


def _decode_random_resized_crop(data: bytes, rng, size: int, scale, ratio) -> Image.Image:
  with Image.open(io.BytesIO(data)) as pil:
    box = _draft_crop_box(pil, rng, size, scale, ratio)
    if pil.mode != 'RGB':
      pil = pil.convert('RGB')
    return pil.resize((size, size), Image.BILINEAR, box=box)


def _draft_crop_box(pil: Image.Image, rng, size: int, scale, ratio) -> tuple[float, ...]:
  """Draws the crop box from the header's size, sets a JPEG's DCT reduction, and returns the
  box (l, t, r, b) in the pixels of the image as it will decode."""
  width, height = pil.size
  left, top, w, h = sample_crop_box(height, width, rng, scale, ratio)
  if pil.format == 'JPEG':
    # At least DRAFT_GAP x the output size is left for the final antialiased resize (as
    # Pillow's thumbnail(reducing_gap=2) does): the DCT reduction is a box filter.
    need = DRAFT_GAP * max(size / w, size / h)
    pil.draft('RGB', (math.ceil(width * need), math.ceil(height * need)))
  # A reduced pixel covers exactly `reduction` source pixels (the last one partially).
  f = 1.0 / 2 ** round(math.log2(width / pil.size[0]))
  return left * f, top * f, (left + w) * f, (top + h) * f


def decode_crop_window(
  data, rng: np.random.Generator, size: int, canvas: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> dict[str, np.ndarray]:
  """`random_resized_crop`'s crop, left for the device to resize (data/device_preprocess.py).

  `data` is an encoded image (bytes) or a uint8 HWC array. The box is drawn (and a JPEG
  draft-decoded) as in `decode_random_resized_crop`, but instead of resizing, the window of
  the image that Pillow's antialiased bilinear resize of the box reads (the box plus the
  filter's reach, clipped to the image) is copied into the top-left corner of a zero uint8
  (canvas, canvas, 3) array. Returns {'image': that array, 'resize_box': float32 (x0, y0,
  x1, y1), the box in canvas pixels, 'resize_valid': int32 (rows, cols) of the window};
  `device_preprocess.resize_crops` then rebuilds Pillow's coefficients, so the image edge,
  and only it, clips the filter as on the host. A window larger than the canvas is resized
  on the host instead and shipped as a (size, size) window with box (0, 0, size, size),
  which the device's resize leaves as it is.
  """
  if isinstance(data, bytes):
    with Image.open(io.BytesIO(data)) as pil:
      box = _draft_crop_box(pil, rng, size, scale, ratio)
      window = _filter_window(box, pil.size, size)
      fits = max(window[2] - window[0], window[3] - window[1]) <= canvas
      if fits:
        pil = pil.crop(window)
      if pil.mode != 'RGB':  # before resizing, as the host path does
        pil = pil.convert('RGB')
      pixels = np.asarray(pil if fits else pil.resize((size, size), Image.BILINEAR, box=box))
  else:
    image = to_rgb(to_uint8_hwc(data))
    left, top, w, h = sample_crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
    box = (left, top, left + w, top + h)
    window = _filter_window(box, image.shape[1::-1], size)
    fits = max(window[2] - window[0], window[3] - window[1]) <= canvas
    pixels = (
      image[window[1] : window[3], window[0] : window[2]]
      if fits
      else resize(image, size, size, box=box)
    )
  out = np.zeros((canvas, canvas, 3), np.uint8)
  out[: pixels.shape[0], : pixels.shape[1]] = pixels
  x0, y0 = (window[0], window[1]) if fits else (0, 0)
  box = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0) if fits else (0, 0, size, size)
  return {
    'image': out,
    'resize_box': np.asarray(box, np.float32),
    'resize_valid': np.asarray(pixels.shape[:2], np.int32),
  }


def _filter_window(box, image_size: tuple[int, int], size: int) -> tuple[int, int, int, int]:
  """(l, t, r, b) of the pixels that a bilinear resize of `box` to `size` reads: Pillow's
  filter reaches max(1, box extent / size) pixels past the box; one more for its rounding."""

  def reads(lo: float, hi: float, n: int) -> tuple[int, int]:
    reach = max(1.0, (hi - lo) / size)
    return max(math.floor(lo - reach) - 1, 0), min(math.ceil(hi + reach) + 1, n)

  (l, r), (t, b) = reads(box[0], box[2], image_size[0]), reads(box[1], box[3], image_size[1])
  return l, t, r, b


def _grey(image: np.ndarray) -> np.ndarray:
  return image @ np.asarray([0.299, 0.587, 0.114], np.float32)


def draw_color_jitter(
  rng: np.random.Generator, strength=(0.6, 1.4)
) -> tuple[np.ndarray, np.ndarray]:
  """The random draws of one `color_jitter`: float32 factors (brightness, contrast,
  saturation) ~ U(strength), and int32 `order`, the op indices in the order applied."""
  factors = rng.uniform(strength[0], strength[1], size=3)
  return factors.astype(np.float32), rng.permutation(3).astype(np.int32)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength=(0.6, 1.4)) -> np.ndarray:
  """torchvision ColorJitter(brightness, contrast, saturation) with factors ~ U(strength),
  applied in a random order; uint8 RGB in, float32 [0, 255] out."""
  x = image.astype(np.float32)
  factors, order = draw_color_jitter(rng, strength)
  for op in order:
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


_GREY = (0.299, 0.587, 0.114)


def color_jitter_pil(
  image: Image.Image, rng: np.random.Generator, strength=(0.6, 1.4)
) -> Image.Image:
  """`color_jitter` (same random draws and order) on an RGB PIL image, in uint8.

  Each op is one affine colour matrix applied by Pillow in C, rounding and clipping to
  uint8 after every op (as torchvision's PIL path does); `color_jitter` keeps float32
  between ops, so the two differ by rounding (<= 1.5 grey levels).
  """
  factors, order = draw_color_jitter(rng, strength)
  for op in order:
    f = float(factors[op])
    if op == 0:  # brightness: blend with black
      matrix = (f, 0, 0, 0, 0, f, 0, 0, 0, 0, f, 0)
    elif op == 1:  # contrast: blend with the mean grey level
      # Channel means from Pillow's histogram (C code; a strided numpy mean costs ~1 ms).
      hist = np.asarray(image.histogram(), np.float64).reshape(3, 256)
      mean = float(hist @ np.arange(256.0) @ np.asarray(_GREY)) / (image.width * image.height)
      matrix = (f, 0, 0, (1 - f) * mean, 0, f, 0, (1 - f) * mean, 0, 0, f, (1 - f) * mean)
    else:  # saturation: blend with the grey image
      g = [(1 - f) * w for w in _GREY]
      matrix = (f + g[0], g[1], g[2], 0, g[0], f + g[1], g[2], 0, g[0], g[1], f + g[2], 0)
    image = image.convert('RGB', matrix)
  return image


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """What every transform needs to know: output size and normalisation."""

  image_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  variable_size: bool = False  # the source has images of varying size (ImageNet)


DEVICE_NORMALIZED = ('imagenet', 'vit')  # augments that can ship uint8 to the device


class TrainTransform(grain.transforms.RandomMap):
  """{'image': uint8 or encoded bytes, 'label'} -> {'image': float32 normalised, 'label':
  int32}.

  With `device_normalize` (augment imagenet/vit only) the image stays uint8 after the crop
  and flip, and the step normalises it (rankdeficit/data/device_preprocess.py); augment
  imagenet then also returns its colour jitter's draws, 'color_factors' float32 [3] and
  'color_order' int32 [3], for the device to apply. The random stream is the same either
  way, so a record gets the same crop, flip and jitter in both modes.
  """

  def __init__(
    self,
    augment: str,
    prep: Preprocess,
    *,
    device_normalize: bool = False,
    device_resize_canvas: int = 0,
  ):
    if augment not in ('cifar', 'imagenet', 'vit', 'none'):
      raise ValueError(f'Unknown augment {augment!r}; choose cifar|imagenet|vit|none.')
    if device_normalize and augment not in DEVICE_NORMALIZED:
      raise ValueError(f'device_normalize needs augment in {DEVICE_NORMALIZED}, not {augment!r}.')
    if device_resize_canvas and (not device_normalize or device_resize_canvas < prep.image_size):
      raise ValueError(
        f'device_resize_canvas={device_resize_canvas} needs device_normalize '
        f'and a canvas of at least image_size={prep.image_size} pixels.'
      )
    self.augment = augment
    self.prep = prep
    self.device_normalize = device_normalize
    self.device_resize_canvas = device_resize_canvas

  def random_map(self, element, rng: np.random.Generator):
    p = self.prep
    if self.device_normalize:
      return self._uint8_random_map(element, rng)
    if isinstance(element['image'], bytes) and self.augment in ('imagenet', 'vit'):
      return self._encoded_random_map(element, rng)
    if isinstance(element['image'], bytes):
      raise ValueError(
        f"Encoded images need augment='imagenet' or 'vit', not "
        f'{self.augment!r} (decode them in the source instead).'
      )
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
    return {'image': normalize(image, p.mean, p.std), 'label': np.int32(element['label'])}

  def _scale(self) -> tuple[float, float]:
    return (0.08, 1.0) if self.augment == 'imagenet' else (0.05, 1.0)

  def _encoded_crop_flip(self, data: bytes, rng: np.random.Generator) -> Image.Image:
    image = _decode_random_resized_crop(
      data, rng, self.prep.image_size, self._scale(), (3 / 4, 4 / 3)
    )
    if rng.random() < 0.5:  # random_flip's draw
      image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image

  def _encoded_random_map(self, element, rng: np.random.Generator):
    """As `random_map`, for an encoded image: the same random stream and transforms."""
    p = self.prep
    image = self._encoded_crop_flip(element['image'], rng)
    if self.augment == 'imagenet':
      image = color_jitter_pil(image, rng)
    return {
      'image': normalize(np.asarray(image), p.mean, p.std),
      'label': np.int32(element['label']),
    }

  def _uint8_random_map(self, element, rng: np.random.Generator):
    """Crop + flip to uint8 (from bytes or an array); jitter and normalisation are left to
    the device. Same draws, in the same order, as the float paths. With a
    `device_resize_canvas` the crop's window and the flip draw are shipped instead
    (`decode_crop_window`): the device resizes and flips too."""
    if self.device_resize_canvas:
      out = decode_crop_window(
        element['image'],
        rng,
        self.prep.image_size,
        self.device_resize_canvas,
        self._scale(),
        (3 / 4, 4 / 3),
      )
      out['flip'] = np.bool_(rng.random() < 0.5)  # random_flip's draw
    elif isinstance(element['image'], bytes):
      out = {'image': np.asarray(self._encoded_crop_flip(element['image'], rng))}
    else:
      image = random_resized_crop(
        to_uint8_hwc(element['image']), rng, self.prep.image_size, self._scale()
      )
      out = {'image': random_flip(to_rgb(image), rng)}
    out['label'] = np.int32(element['label'])
    if self.augment == 'imagenet':
      out['color_factors'], out['color_order'] = draw_color_jitter(rng)
    return out


class EvalTransform(grain.transforms.Map):
  """Deterministic geometry + normalisation; passes `mask` through (padding records)."""

  def __init__(self, prep: Preprocess):
    self.prep = prep

  def map(self, element):
    p = self.prep
    if not element['mask']:
      image = np.zeros((p.image_size, p.image_size, 3), np.float32)
    else:
      image = normalize(
        fit_to_size(element['image'], p.image_size, variable_size=p.variable_size), p.mean, p.std
      )
    return {'image': image, 'label': np.int32(element['label']), 'mask': np.bool_(element['mask'])}
