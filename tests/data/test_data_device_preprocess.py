"""Normalisation and colour jitter inside the step (data/device_preprocess.py) against float64
references and the host float path they replace, and the jitter draws' distribution."""
import io
import itertools

import jax
import numpy as np
import pytest
from PIL import Image

from rankdeficit.data import augment, device_preprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(n, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


def _smooth_image(h, w, seed=0):
  small = np.random.default_rng(seed).integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def _jitter64(image, factors, order):
  """ColorJitter in float64: blend each op with black / mean grey / grey image, clip."""
  x = image.astype(np.float64)
  for op in order:
    grey = x @ np.asarray(device_preprocess.GREY, np.float64)
    target = {0: 0.0, 1: grey.mean(), 2: grey[..., None]}[int(op)]
    x = np.clip((x - target) * np.float64(factors[op]) + target, 0.0, 255.0)
  return x


def test_normalize_matches_float64_and_the_host():
  images = _images(4, 8, 8)
  want = (images / 255.0 - np.asarray(MEAN)) / np.asarray(STD)
  got = np.asarray(jax.jit(device_preprocess.DeviceNormalize(MEAN, STD))({'image': images}))
  host = np.stack([augment.normalize(im, MEAN, STD) for im in images])
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  np.testing.assert_allclose(host, want, rtol=0, atol=2e-6)
  np.testing.assert_allclose(got, host, rtol=0, atol=1e-6)


def test_color_jitter_matches_float64_for_every_order():
  images = _images(6, 12, 10, seed=1).astype(np.float32)
  orders = np.array(list(itertools.permutations(range(3))), np.int32)  # all 6 orders
  factors = np.random.default_rng(2).uniform(0.6, 1.4, (6, 3)).astype(np.float32)
  factors[0] = (1.4, 0.6, 1.4)  # clipping at 255 and 0 happens
  got = np.asarray(jax.jit(device_preprocess.color_jitter)(images, factors, orders))
  for i in range(6):
    want = _jitter64(images[i], factors[i], orders[i])
    np.testing.assert_allclose(got[i], want, rtol=0, atol=2e-3)  # grey levels
  # The order matters, so the test above could fail: brightness first vs last differ.
  assert np.abs(_jitter64(images[0], factors[0], (0, 1, 2)) -
                _jitter64(images[0], factors[0], (2, 1, 0))).max() > 1


def test_jitter_draws_distribution():
  rng = np.random.default_rng(0)
  draws = [augment.draw_color_jitter(rng) for _ in range(6000)]
  factors = np.stack([f for f, _ in draws])
  orders = np.stack([o for _, o in draws])
  assert factors.dtype == np.float32 and orders.dtype == np.int32
  assert factors.min() >= 0.6 and factors.max() <= 1.4
  sigma = 0.8 / np.sqrt(12) / np.sqrt(len(draws))  # U(0.6, 1.4): mean 1, std 0.8/sqrt(12)
  np.testing.assert_allclose(factors.mean(0), 1.0, atol=4 * sigma)
  np.testing.assert_allclose(factors.std(0), 0.8 / np.sqrt(12), rtol=0.05)
  assert (np.sort(orders, axis=1) == np.arange(3)).all()  # always a permutation
  counts = np.unique(orders, axis=0, return_counts=True)[1]
  assert len(counts) == 6
  p = 1 / 6
  assert np.abs(counts / len(draws) - p).max() < 4 * np.sqrt(p * (1 - p) / len(draws))


def _encode_png(image):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'PNG')
  return buf.getvalue()


@pytest.mark.parametrize('kind', ['imagenet', 'vit'])
def test_uint8_transform_plus_device_equals_the_host_float_path(kind):
  prep = augment.Preprocess(24, MEAN, STD, variable_size=True)
  host = augment.TrainTransform(kind, prep)
  ship = augment.TrainTransform(kind, prep, device_normalize=True)
  image = _smooth_image(40, 56)
  outs, wants = [], []
  for seed in range(6):
    rng_a, rng_b, rng_c = (np.random.default_rng(seed) for _ in range(3))
    wants.append(host.random_map({'image': image, 'label': 2}, rng_a)['image'])
    out = ship.random_map({'image': image, 'label': 2}, rng_b)
    from_bytes = ship.random_map({'image': _encode_png(image), 'label': 2}, rng_c)
    assert out['image'].dtype == np.uint8 and out['image'].shape == (24, 24, 3)
    assert out['label'] == 2 and out['label'].dtype == np.int32
    assert ('color_factors' in out) == (kind == 'imagenet')
    for key in out:  # bytes and arrays: the same crop, flip and draws
      np.testing.assert_array_equal(from_bytes[key], out[key])
    assert rng_a.random() == rng_b.random() == rng_c.random()  # as many draws as the host
    outs.append(out)
  batch = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
  got = np.asarray(jax.jit(device_preprocess.DeviceNormalize(MEAN, STD))(batch))
  # float32 jitter on both sides: they differ by rounding only (1e-3 grey levels).
  np.testing.assert_allclose(got, np.stack(wants), rtol=0, atol=1e-3 / (255 * min(STD)))


def test_model_images_passes_float_through_and_refuses_bare_uint8():
  floats = {'image': np.ones((2, 4, 4, 3), np.float32)}
  normalize = device_preprocess.DeviceNormalize(MEAN, STD)
  assert device_preprocess.model_images(floats, None) is floats['image']
  assert normalize(floats) is floats['image']
  uint8 = {'image': np.ones((2, 4, 4, 3), np.uint8)}
  with pytest.raises(TypeError, match='device_preprocess'):
    device_preprocess.model_images(uint8, None)
  assert device_preprocess.model_images(uint8, normalize).dtype == np.float32


def test_device_normalize_needs_a_crop_augment():
  with pytest.raises(ValueError, match='device_normalize'):
    augment.TrainTransform('cifar', augment.Preprocess(32, MEAN, STD), device_normalize=True)
