"""Augmenting encoded images (augment.decode_random_resized_crop, TrainTransform on bytes)
keeps the semantics of the decoded-array path: same boxes, random stream, shapes, pixels."""

import io

import numpy as np
from PIL import Image
import pytest

from rankdeficit.data import augment


def _smooth_image(h, w, seed=0):
  """A photo-like (smooth) uint8 RGB image: low-frequency noise, upsampled."""
  small = np.random.default_rng(seed).integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def _encode(image, fmt, **kw):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, fmt, **kw)
  return buf.getvalue()


def _torchvision_box_sizes(height, width, n, seed):
  """(w, h) of n boxes drawn as torchvision.transforms.RandomResizedCrop.get_params does."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    for _ in range(10):
      target = height * width * rng.uniform(0.08, 1.0)
      aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
      w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
      if 0 < w <= width and 0 < h <= height:
        out.append((w, h))
        break
    else:
      out.append((width, int(round(width * 3 / 4))) if width / height > 4 / 3 else (width, height))
  return np.array(out, np.float64)


def test_crop_box_statistics_match_torchvision():
  rng = np.random.default_rng(0)
  boxes = np.array([augment.sample_crop_box(300, 400, rng) for _ in range(3000)])
  left, top, w, h = boxes.T
  assert (left >= 0).all() and (top >= 0).all()
  assert (left + w <= 400).all() and (top + h <= 300).all()
  ref = _torchvision_box_sizes(300, 400, 3000, seed=1)  # an independent sample
  area, ref_area = w * h / (300 * 400), ref[:, 0] * ref[:, 1] / (300 * 400)
  assert area.min() >= 0.07 and area.max() <= 1.0
  assert abs(area.mean() - ref_area.mean()) < 4 * ref_area.std() / np.sqrt(3000)
  log_aspect, ref_log_aspect = np.log(w / h), np.log(ref[:, 0] / ref[:, 1])
  assert abs(log_aspect.mean() - ref_log_aspect.mean()) < 4 * ref_log_aspect.std() / np.sqrt(3000)


@pytest.mark.parametrize('scale', [(0.08, 1.0), (0.05, 1.0)])
def test_png_bytes_give_exactly_the_array_path(scale):
  image = _smooth_image(90, 120)
  data = _encode(image, 'PNG')
  for seed in range(8):
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    want = augment.random_resized_crop(image, rng_a, 24, scale)
    got = augment.decode_random_resized_crop(data, rng_b, 24, scale)
    assert got.shape == (24, 24, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    assert rng_a.random() == rng_b.random()  # the same number of draws


def test_jpeg_draft_decode_is_close_to_full_decode():
  image = _smooth_image(640, 800)
  data = _encode(image, 'JPEG', quality=95)
  full = np.asarray(Image.open(io.BytesIO(data)))
  diffs = []
  for seed in range(10):
    want = augment.random_resized_crop(full, np.random.default_rng(seed), 64)
    got = augment.decode_random_resized_crop(data, np.random.default_rng(seed), 64)
    diffs.append(np.abs(got.astype(int) - want.astype(int)))
  # Grey levels; JPEG compression itself (quality 95) moves pixels by ~0.5 on average.
  assert max(d.mean() for d in diffs) < 1.0 and max(d.max() for d in diffs) <= 8


def test_grey_jpeg_becomes_rgb():
  grey = _smooth_image(64, 64)[..., 0]
  out = augment.decode_random_resized_crop(_encode(grey, 'JPEG'), np.random.default_rng(0), 32)
  assert out.shape == (32, 32, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_color_jitter_pil_matches_float_jitter_up_to_rounding():
  image = _smooth_image(48, 48)
  for seed in range(10):
    want = augment.color_jitter(image, np.random.default_rng(seed))
    got = np.asarray(augment.color_jitter_pil(Image.fromarray(image), np.random.default_rng(seed)))
    assert np.abs(got - want).max() <= 2.0  # one rounding to uint8 per op


@pytest.mark.parametrize('kind', ['imagenet', 'vit'])
def test_train_transform_on_bytes_matches_array_path(kind):
  prep = augment.Preprocess(32, (0.5,) * 3, (0.25,) * 3, variable_size=True)
  t = augment.TrainTransform(kind, prep)
  image = _smooth_image(50, 70)
  data = _encode(image, 'PNG')
  for seed in range(5):
    a = t.random_map({'image': image, 'label': 3}, np.random.default_rng(seed))
    b = t.random_map({'image': data, 'label': 3}, np.random.default_rng(seed))
    c = t.random_map({'image': data, 'label': 3}, np.random.default_rng(seed))
    assert b['image'].shape == (32, 32, 3) and b['image'].dtype == np.float32
    assert b['label'] == 3 and b['label'].dtype == np.int32
    np.testing.assert_array_equal(b['image'], c['image'])  # deterministic per seed
    # Same crop, flip and jitter factors; jitter rounding only (2 grey levels / (0.25 * 255)).
    np.testing.assert_allclose(b['image'], a['image'], atol=2.01 / (0.25 * 255))


def test_encoded_images_need_a_random_crop_augment():
  t = augment.TrainTransform('cifar', augment.Preprocess(32, (0.5,) * 3, (0.25,) * 3))
  with pytest.raises(ValueError, match='imagenet'):
    t.random_map({'image': b'\xff\xd8', 'label': 0}, np.random.default_rng(0))
