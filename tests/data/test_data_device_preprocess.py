"""Normalisation and colour jitter inside the step (data/device_preprocess.py) against float64
references and the host float path they replace, and the jitter draws' distribution."""

import io
import itertools

import jax
import numpy as np
from PIL import Image
import pytest

from rankdeficit.data import augment
from rankdeficit.data import device_preprocess

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
  assert (
    np.abs(
      _jitter64(images[0], factors[0], (0, 1, 2)) - _jitter64(images[0], factors[0], (2, 1, 0))
    ).max()
    > 1
  )


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


# --- Crop windows resized on the device (augment.decode_crop_window + resize_crops) ---


@pytest.fixture(scope='module')
def real_jpegs(shared_data):
  """12 real Tiny-ImageNet photos upscaled to 120x100 (plus grain noise), JPEG q90."""
  with np.load(shared_data / 'tinyimagenet200_train100_32x32.npz') as arrays:
    images = arrays['image'][:12]
  rng = np.random.default_rng(0)
  out = []
  for image in images:
    big = np.asarray(Image.fromarray(image).resize((120, 100), Image.BICUBIC), np.float32)
    big = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, 'JPEG', quality=90)
    out.append(buf.getvalue())
  return out


def _resized_on_device(windows, size):
  batch = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
  resize = jax.jit(device_preprocess.resize_crops, static_argnums=3)
  return np.asarray(
    resize(batch['image'].astype(np.float32), batch['resize_box'], batch['resize_valid'], size)
  )


@pytest.mark.parametrize('canvas', [128, 56])  # every window fits / many are resized on the host
def test_device_resize_of_crop_windows_is_pillows(real_jpegs, canvas):
  size, seeds = 48, range(4)
  want, windows = [], []
  for data in real_jpegs:
    for seed in seeds:
      want.append(augment.decode_random_resized_crop(data, np.random.default_rng(seed), size))
      windows.append(augment.decode_crop_window(data, np.random.default_rng(seed), size, canvas))
  got = _resized_on_device(windows, size)
  assert got.shape == (len(want), size, size, 3)
  diff = np.abs(got - np.stack(want).astype(np.float32))
  # Pillow rounds to uint8 after each axis (<= 0.5 + 0.5 grey levels); the device does not.
  assert diff.max() <= 1.0 + 1e-3 and diff.mean() < 0.5
  on_host = [(w['resize_box'] == (0, 0, size, size)).all() for w in windows]
  assert not any(on_host) if canvas == 128 else 0 < sum(on_host) < len(on_host)


def test_only_the_image_edge_clips_the_device_filter(real_jpegs):
  """The whole image as the box: Pillow's filter is cut at all four edges. Past
  'resize_valid' the canvas is zero padding; read as image, it darkens the border."""
  image = np.asarray(Image.open(io.BytesIO(real_jpegs[0])).convert('RGB'))  # 100 x 120
  canvas = np.zeros((128, 128, 3), np.uint8)
  canvas[:100, :120] = image
  window = {
    'image': canvas,
    'resize_box': np.array([0, 0, 120, 100], np.float32),
    'resize_valid': np.array([100, 120], np.int32),
  }
  want = np.asarray(Image.fromarray(image).resize((48, 48), Image.BILINEAR), np.float32)
  got = _resized_on_device([window], 48)[0]
  assert np.abs(got - want).max() <= 1.0 + 1e-3
  window['resize_valid'] = np.array([128, 128], np.int32)
  assert np.abs(_resized_on_device([window], 48)[0] - want).max() > 10


def test_resize_weights_are_identity_at_scale_one():
  w = np.asarray(
    device_preprocess.bilinear_weights(np.float32(0), np.float32(24), np.int32(24), 40, 24)
  )
  np.testing.assert_array_equal(w, np.eye(24, 40, dtype=np.float32))


@pytest.mark.parametrize('kind', ['imagenet', 'vit'])
def test_window_transform_plus_device_equals_the_host_path(real_jpegs, kind):
  prep = augment.Preprocess(48, MEAN, STD, variable_size=True)
  host = augment.TrainTransform(kind, prep, device_normalize=True)
  ship = augment.TrainTransform(kind, prep, device_normalize=True, device_resize_canvas=96)
  crops, windows = [], []
  for i, data in enumerate(real_jpegs):
    rng_a, rng_b = np.random.default_rng(i), np.random.default_rng(i)
    crops.append(host.random_map({'image': data, 'label': 3}, rng_a))
    windows.append(ship.random_map({'image': data, 'label': 3}, rng_b))
    assert rng_a.random() == rng_b.random()  # as many draws as the host path
    assert windows[-1]['image'].shape == (96, 96, 3) and windows[-1]['label'] == 3
  assert {w['flip'].item() for w in windows} == {True, False}
  stack = lambda outs: {k: np.stack([o[k] for o in outs]) for k in outs[0]}  # noqa: E731
  normalize = jax.jit(device_preprocess.DeviceNormalize(MEAN, STD, image_size=48))
  got, want = np.asarray(normalize(stack(windows))), np.asarray(normalize(stack(crops)))
  # < 1 grey level before the jitter, whose factors (<= 1.4 per op) can scale it up.
  assert np.abs(got - want).max() <= 3.0 / (255 * min(STD))
  assert np.abs(got - want).mean() <= 0.5 / (255 * min(STD))
  with pytest.raises(ValueError, match='image_size'):
    device_preprocess.DeviceNormalize(MEAN, STD)(stack(windows))


def test_arrays_and_png_bytes_give_the_same_windows():
  image = _smooth_image(40, 56)
  for seed in range(6):
    a = augment.decode_crop_window(image, np.random.default_rng(seed), 24, 48)
    b = augment.decode_crop_window(_encode_png(image), np.random.default_rng(seed), 24, 48)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_device_resize_canvas_needs_device_normalize_and_room():
  prep = augment.Preprocess(32, MEAN, STD)
  with pytest.raises(ValueError, match='device_resize_canvas'):
    augment.TrainTransform('imagenet', prep, device_resize_canvas=64)
  with pytest.raises(ValueError, match='device_resize_canvas'):
    augment.TrainTransform('imagenet', prep, device_normalize=True, device_resize_canvas=16)


def test_grey_jpeg_windows_come_out_rgb_and_match_the_host(real_jpegs):
  grey = Image.open(io.BytesIO(real_jpegs[1])).convert('L')
  buf = io.BytesIO()
  grey.save(buf, 'JPEG', quality=90)
  want = np.stack(
    [
      augment.decode_random_resized_crop(buf.getvalue(), np.random.default_rng(s), 32)
      for s in range(4)
    ]
  ).astype(np.float32)
  for canvas in (128, 40):  # every window fits / most are resized on the host
    windows = [
      augment.decode_crop_window(buf.getvalue(), np.random.default_rng(s), 32, canvas)
      for s in range(4)
    ]
    assert all(w['image'].shape == (canvas, canvas, 3) for w in windows)
    assert np.abs(_resized_on_device(windows, 32) - want).max() <= 1.0 + 1e-3
