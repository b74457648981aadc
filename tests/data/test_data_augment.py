"""Properties of the per-example augmentations (rankdeficit/data/augment.py)."""

import numpy as np
import pytest

from rankdeficit.data import augment


def _image(h=32, w=32, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_random_crop_keeps_size_and_content():
  image = _image()
  rng = np.random.default_rng(0)
  for _ in range(20):
    out = augment.random_crop_with_padding(image, rng, 32, 4)
    assert out.shape == (32, 32, 3)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    hits = [
      (t, l)
      for t in range(9)
      for l in range(9)
      if np.array_equal(padded[t : t + 32, l : l + 32], out)
    ]
    assert hits  # a window of the zero-padded image


def test_flip_is_a_flip():
  image = _image()
  outs = [augment.random_flip(image, np.random.default_rng(s)) for s in range(20)]
  flipped = [o for o in outs if not np.array_equal(o, image)]
  assert 0 < len(flipped) < 20
  for o in flipped:
    np.testing.assert_array_equal(o, image[:, ::-1])


@pytest.mark.parametrize('scale', [(0.08, 1.0), (0.05, 1.0)])
def test_random_resized_crop_size(scale):
  image = _image(60, 90)
  rng = np.random.default_rng(1)
  for _ in range(10):
    assert augment.random_resized_crop(image, rng, 24, scale).shape == (24, 24, 3)


def test_random_resized_crop_full_box_is_resize():
  image = _image(16, 16)
  out = augment.resize(image, 16, 16, box=(0, 0, 16, 16))
  np.testing.assert_array_equal(out, image)


def test_color_jitter_range_and_identity():
  image = _image()
  out = augment.color_jitter(image, np.random.default_rng(0))
  assert out.shape == image.shape and out.dtype == np.float32
  assert out.min() >= 0 and out.max() <= 255
  same = augment.color_jitter(image, np.random.default_rng(0), strength=(1.0, 1.0))
  np.testing.assert_allclose(same, image, atol=1e-3)


def test_normalisation_stats():
  rng = np.random.default_rng(0)
  mean, std = np.array([0.3, 0.5, 0.7]), np.array([0.1, 0.2, 0.15])
  pixels = np.clip(rng.normal(mean * 255, std * 255, (20000, 1, 3)), 0, 255)
  out = augment.normalize(pixels, mean, std)
  np.testing.assert_allclose(out.mean((0, 1)), 0, atol=0.03)
  np.testing.assert_allclose(out.std((0, 1)), 1, atol=0.03)


def test_fit_to_size_mnist_pad_and_resize():
  grey = _image(28, 28, 1)
  out = augment.fit_to_size(grey, 32)
  assert out.shape == (32, 32, 3)
  np.testing.assert_array_equal(out[2:30, 2:30, 1], grey[..., 0])
  assert out[:2].max() == 0 and out[:, :2].max() == 0
  assert augment.fit_to_size(_image(8, 8, 1), 32).shape == (32, 32, 3)
  assert augment.fit_to_size(_image(32, 32), 64).shape == (64, 64, 3)
  assert augment.fit_to_size(_image(300, 200), 224, variable_size=True).shape == (224, 224, 3)


@pytest.mark.parametrize('kind', ['cifar', 'imagenet', 'vit', 'none'])
def test_train_transform_deterministic_per_rng(kind):
  prep = augment.Preprocess(32, (0.5,) * 3, (0.25,) * 3)
  t = augment.TrainTransform(kind, prep)
  record = {'image': _image(40, 36), 'label': 3}
  a = t.random_map(record, np.random.default_rng(7))
  b = t.random_map(record, np.random.default_rng(7))
  assert a['image'].shape == (32, 32, 3) and a['image'].dtype == np.float32
  assert a['label'] == 3 and a['label'].dtype == np.int32
  np.testing.assert_array_equal(a['image'], b['image'])


def test_unknown_augment():
  with pytest.raises(ValueError, match='augment'):
    augment.TrainTransform('autoaugment', augment.Preprocess(32, (0.5,) * 3, (0.5,) * 3))
