"""Throughput of the training input pipeline against the train step it has to feed.

  python -m tools.benchmark_input [--data_dir=DIR] [--dataset=cifar10_jpeg] [--seconds=10]
      [--workers=0,2] [--augment=cifar] [--in_memory=both|on|off] [--model_width=2048]

Without --data_dir it imports a 5,000-image cifar10_jpeg subset from ../shared/data into a
temporary folder first. For each (in_memory, num_workers) it prints images/s, and it times
the jitted train step of the MLP 8 x `model_width` (the paper's CIFAR-10 MLP, batch 128) in
the same run, printing the ratio pipeline rate / step rate: a ratio >= 5 means the pipeline
can feed that model with room to spare. Run it on an idle machine (check `uptime`).

With --augment=imagenet (or vit) it measures instead the per-core cost of the ImageNet
training transform on real JPEGs: without --jpeg_dir it writes `--jpeg_count` JPEGs of
`--jpeg_size` pixels (Tiny-ImageNet images of ../shared/data upscaled bicubically, with
Gaussian noise of std `--jpeg_noise` grey levels so that the files carry photo-like
entropy, encoded by Pillow at quality 90) into a temporary tfds array_record dataset, through
the project's import path (rankdeficit/data/local_import.py). It then reads every record in
one thread, timing CPU seconds (`time.process_time`, less sensitive to other processes than
wall time), transforming and stacking batches of 32 as grain does, in ONE run for
  old:     tfds decodes the JPEG, float32 TrainTransform (what the issue's 170/s measured:
           full decode, crop + resize, float32 colour jitter, normalisation on the host);
  encoded: tfds SkipDecoding, float32 TrainTransform: JPEG draft decode, crop + resize in
           one Pillow call, uint8 colour jitter, host normalisation;
  uint8:   tfds SkipDecoding, TrainTransform(device_normalize=True), what input_pipeline
           runs for augment=imagenet/vit by default: uint8 crop + flip and the jitter's
           random draws; the jitter and normalisation run in the train step
           (data/device_preprocess.py);
  windows: as uint8 with device_resize_canvas = 2 x image_size (config.device_resize_canvas,
           opt-in): the decoded window around each crop box in a zero canvas; the step also
           resizes (Pillow's coefficients, < 1 grey level from the host's resize) and flips;
and prints images per CPU-second (= per fully used core), the ratios against the old path
and the issue's 170/s, what the moved part costs when jitted on this CPU (a CPU-only run
pays it in the step; an accelerator hides it), how many windows did not fit the canvas,
the host -> device bytes per image, and the grain workers needed for `--target_rate`
images/s: ceil(target / per-core rate), plus one core for the trainer.
(`grain.experimental.pick_performance_config` sizes workers from element sizes and a RAM
budget for IterDataset pipelines, not from CPU cost, and the project uses grain.DataLoader;
a measured per-core rate is the rule that follows the CPU cost.)

Figures (2026-11-29), the experiment job SIGSTOPped for the run so the 2 cores were idle
(the 1-minute load average still read 2.4 from before), Pillow 13.0 with its libjpeg-turbo,
default settings (300 JPEGs of 400x350 at quality 90, mean 64 KB; 224x224 crops,
augment=imagenet), medians of 3 repeats with the paths interleaved:
  | path                                 | ms/image | images per CPU-second | vs old |
  | old (tfds decode, float32 transform) | 4.09 | 245 | 1.00x |
  | encoded, float32 transform           | 3.34 | 299 | 1.22x |
  | uint8 (encoded, uint8 + device jitter) | 2.05 | 487 | 1.99x |
  | windows (448x448, device resize too) | 1.76 | 568 | 2.32x |
  windows / the issue's 170/s = 3.34x, uint8 / 170/s = 2.87x. The same old path measured
  183/s in an idle run of 2026-11-28 (uint8 then 383/s = 2.10x it): this VM's per-core speed
  moves between sessions by more than load explains, so the ratio within one run (2.32x)
  is the robust figure, and the 170/s baseline was taken on a slower day.
Step-side cost on this CPU (XLA, jitted): jitter + normalise 0.375 ms/image; resize + flip +
jitter + normalise of 448-canvases 7.0 ms/image (two f32 matrix products per image, 0.40
GFLOP), which is why windows are off by default and never worth it on a CPU backend.
Host -> device: 602 KB float32, 150.5 KB uint8 crop, 602 KB window per 224x224 image.

Where the windows path's ~1.5-1.8 ms go (cProfile and single-component timings, same JPEGs):
JPEG decode 1.0 ms (libjpeg-turbo, the whole image; 65% of the profile), the window's copy
out of Pillow (crop + np.asarray) 0.2-0.3 ms, the tfds record read + parse 0.08 ms, the JPEG
header 0.03 ms, crop-box sampling, flip and jitter draws and batch stacking ~0.15 ms. The
uint8 path spends ~0.55 ms more on Pillow's resize. At 400x350 a 224 crop never allows a DCT
reduction (`draft` needs a >= 448-pixel box), so one full decode is the floor: 3x the
same-run old path (1.36 ms/image) would leave 0.36 ms for everything but the decode. Tried,
side by side with the uint8 path on the same records, and not adopted:
  - simplejpeg (libjpeg-turbo, numpy out; bit-identical decode): no end-to-end gain (1.89 vs
    1.84 ms); with fastdct + fastupsample: 1.86 ms, and pixels differ by up to 14 levels;
  - TensorFlow's region decode (`tf.io.decode_and_crop_jpeg`): it does skip work (a 100x100
    top-left region 0.37 ms vs 0.99 ms for the whole image) but eager dispatch costs ~0.07 ms
    a call and its decoder's pixels differ from Pillow's by up to 14 levels: 356-404 vs
    469-483 images/s for the uint8 path;
  - libjpeg-turbo 3's own region decode (tj3SetCroppingRegion, through ctypes on the
    libturbojpeg bundled by the `turbojpeg` wheel): +6-12% (515-536 vs 466-509 images/s),
    pixels again differ (up to 15 levels: a different libjpeg-turbo build and upsampling);
    not worth a hand-written C binding to a 0.0.2 wheel;
  - OpenCV (imdecode + INTER_AREA/INTER_LINEAR resize): the crop path 1.45 vs 1.88 ms, but
    INTER_AREA is a box filter, not the antialiased bilinear of torchvision/Pillow (changed
    augmentation semantics), and a 61 MB dependency;
  - shipping Pillow's 4-byte RGBX rows (a memcpy, 0.09 vs 0.15 ms for packed RGB): numpy's
    strided drop of the 4th channel then costs 0.5 ms, and shipping 4 channels adds 33%;
  - Pillow micro-cuts (formats=, numpy flip instead of PIL transpose): within noise.
TPU v4-8 host (assumed: 4 chips at ~3,000 ResNet-50 images/s each in bf16 = 12,000 images/s;
240 vCPUs = 120 cores): num_workers = ceil(12,000 / per-core rate) + 1 trainer core:
  old path     245/s: 49 workers;
  uint8 path   487/s: 25 workers, i.e. 120 cores sustain 119 x 487 = 58,000 images/s;
  windows      568/s: 22 workers (67,600 images/s), for 4x the PCIe bytes (7.2 GB/s).
"""

import argparse
import io
import math
import os
import statistics
import tempfile
import time


def pipeline_rate(config, seconds: float) -> float:
  """Images per second from `create_train_iterator` (start-up excluded)."""
  from rankdeficit.data import input_pipeline  # pylint: disable=import-outside-toplevel

  it = input_pipeline.create_train_iterator(config, seed=0)
  next(it)  # start-up (decoding into memory, worker processes, first reads) is not counted
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(it)['image'].shape[0]
  return count / (time.perf_counter() - start)


def step_rate(config, seconds: float) -> float:
  """Images per second of the jitted MLP train step on one device (compile excluded)."""
  # pylint: disable=import-outside-toplevel
  import functools

  import jax
  import numpy as np

  from rankdeficit import models
  from rankdeficit.training import losses
  from rankdeficit.training import optim
  from rankdeficit.training import steps

  model = models.create_model(config.model, 10)
  tx = optim.create_optimizer(config, steps_per_epoch=100)
  state = steps.create_train_state(
    jax.random.PRNGKey(0), model=model, tx=tx, image_shape=(32, 32, 3)
  )
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      loss_fn=losses.get_loss_fn('ce'),
      temperature_fn=losses.temperature_schedule('constant', 1.0, None, 1, []),
    ),
    donate_argnums=0,
  )
  rng = np.random.default_rng(0)
  batch = {
    'image': rng.normal(size=(config.batch_size, 32, 32, 3)).astype(np.float32),
    'label': rng.integers(0, 10, config.batch_size).astype(np.int32),
  }
  batch = jax.device_put(batch)
  for _ in range(3):  # compile and warm up
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    state, metrics = step(state, batch)
    count += config.batch_size
  jax.block_until_ready(metrics)
  return count / (time.perf_counter() - start)


def write_jpeg_dataset(
  data_dir: str,
  count: int,
  size: tuple[int, int],
  noise: float,
  source: str = os.path.join('..', 'shared', 'data'),
) -> float:
  """Writes tfds dataset 'jpeg_bench' of `count` (width, height) JPEGs; returns mean bytes."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from PIL import Image

  from rankdeficit.data import local_import

  with np.load(os.path.join(source, 'tinyimagenet200_train100_32x32.npz')) as arrays:
    # Loaded once: every NpzFile['key'] access decompresses the whole array again.
    images, labels = arrays['image'], arrays['label']
  rng = np.random.default_rng(0)
  examples = []
  for i in range(count):
    image = images[i % len(images)]
    big = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC), np.float32)
    big = np.clip(big + rng.normal(0, noise, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, 'JPEG', quality=90)
    examples.append({'image': buf.getvalue(), 'label': int(labels[i % 200]) % 200})
  local_import.write_tfds_dataset(
    'jpeg_bench',
    data_dir,
    {'train': iter(examples)},
    image_shape=(None, None, 3),
    num_classes=200,
    encoding_format='jpeg',
  )
  return float(np.mean([len(e['image']) for e in examples]))


ISSUE_BASELINE_RATE = 170.0  # issue 13: decode 2.1 ms + augment=imagenet 3.8 ms per image
BATCH = 32  # outputs are stacked in batches of this size, as grain.transforms.Batch does


def per_core_rate(source, transform, count: int) -> float:
  """Records per CPU-second: read + transform + stack `count` records in this thread."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  transform.random_map(source[0], np.random.default_rng(0))  # warm-up (imports, caches)
  start, outs = time.process_time(), []
  for i in range(count):
    outs.append(transform.random_map(source[i % len(source)], np.random.default_rng(i)))
    if len(outs) == BATCH or i == count - 1:
      _ = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
      outs = []
  return count / (time.process_time() - start)


def device_part_rate(transform, prep, source, count: int) -> float:
  """Images per CPU-second of the step's jitted part of the transform run on this CPU.

  On an accelerator this runs inside the train step; it is timed here only to show what
  moved (and what it would cost a CPU-only run, where "device" = this host)."""
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np

  from rankdeficit.data import device_preprocess

  outs = [
    transform.random_map(source[i % len(source)], np.random.default_rng(i)) for i in range(BATCH)
  ]
  batch = jax.device_put({k: np.stack([o[k] for o in outs]) for k in outs[0]})
  fn = jax.jit(device_preprocess.DeviceNormalize(prep.mean, prep.std, prep.image_size))
  fn(batch).block_until_ready()
  repeats = max(1, count // BATCH)
  start = time.process_time()
  for _ in range(repeats):
    fn(batch).block_until_ready()
  return repeats * BATCH / (time.process_time() - start)


def _jpeg_data_dir(args) -> str:
  """--jpeg_dir, else a temporary one holding freshly written JPEGs; prints what is read."""
  data_dir, mean_bytes = args.jpeg_dir, None
  if data_dir is None:
    data_dir = tempfile.mkdtemp(prefix='rankdeficit_jpeg_')
    width, height = (int(v) for v in args.jpeg_size.split('x'))
    mean_bytes = write_jpeg_dataset(data_dir, args.jpeg_count, (width, height), args.jpeg_noise)
  print(
    f'load average (1 min): {os.getloadavg()[0]:.2f}; JPEGs {args.jpeg_size}, '
    f'mean {mean_bytes or 0:,.0f} bytes, in {data_dir}',
    flush=True,
  )
  return data_dir


def _transform_paths(args, prep) -> tuple[tuple[str, str | None, object], ...]:
  """(name, tfds decoding: None = decoded | 'skip' = encoded, TrainTransform) of each path."""
  from rankdeficit.data import augment  # pylint: disable=import-outside-toplevel

  canvas = 2 * args.image_size
  float_transform = augment.TrainTransform(args.augment, prep)
  uint8_transform = augment.TrainTransform(args.augment, prep, device_normalize=True)
  window_transform = augment.TrainTransform(
    args.augment, prep, device_normalize=True, device_resize_canvas=canvas
  )
  return (
    ('old: tfds decode, float32 TrainTransform', None, float_transform),
    ('encoded, float32 TrainTransform', 'skip', float_transform),
    ('uint8: encoded, uint8 crops (CPU default)', 'skip', uint8_transform),
    (f'windows: {canvas}x{canvas} crop windows', 'skip', window_transform),
  )


def _path_sources(args, data_dir: str, paths) -> list:
  """The tfds data source each path reads (one per decoding)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  by_decode = {
    decode: tfds.data_source(
      args.jpeg_dataset,
      split='train',
      data_dir=data_dir,
      download=False,
      decoders={'image': tfds.decode.SkipDecoding()} if decode else None,
    )
    for decode in {decode for _, decode, _ in paths}
  }
  return [by_decode[decode] for _, decode, _ in paths]


def _median_rates(args, paths, sources) -> list[float]:
  """Per-core rate of each path, median over --repeats; prints one line per path."""
  # Paths interleaved within each repeat, so that load drift hits them alike; medians.
  samples = [[] for _ in paths]
  for _ in range(args.repeats):
    for (_, _, transform), source, rates_of_path in zip(paths, sources, samples):
      rates_of_path.append(per_core_rate(source, transform, args.jpeg_count))
  rates = [statistics.median(r) for r in samples]
  for (name, _, _), rate, rates_of_path in zip(paths, rates, samples):
    print(
      f'  {name:42s} {rate:7,.0f} images per CPU-second ({1e3 / rate:.2f} ms/image; '
      f'median of {", ".join(f"{r:,.0f}" for r in rates_of_path)})',
      flush=True,
    )
  return rates


def _windows_on_host(args, window_transform, source) -> tuple[int, int]:
  """(windows the host resized because they exceed the canvas, records looked at)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  count = min(args.jpeg_count, len(source))
  full = (0, 0, args.image_size, args.image_size)
  on_host = sum(
    bool(
      (window_transform.random_map(source[i], np.random.default_rng(i))['resize_box'] == full).all()
    )
    for i in range(count)
  )
  return on_host, count


def imagenet_transform_rates(args) -> None:
  """Prints per-core rates of the old (decoded, float32) and new (encoded, uint8) paths."""
  from rankdeficit.data import augment  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import datasets  # pylint: disable=import-outside-toplevel

  data_dir = _jpeg_data_dir(args)
  prep = augment.Preprocess(args.image_size, *datasets.IMAGENET_STATS, variable_size=True)
  paths = _transform_paths(args, prep)
  sources = _path_sources(args, data_dir, paths)
  rates = _median_rates(args, paths, sources)
  old, uint8, new = rates[0], rates[2], rates[3]
  for name, (_, _, transform) in (('uint8', paths[2]), ('windows', paths[3])):
    device = device_part_rate(transform, prep, sources[-1], args.jpeg_count)
    moved = (
      'resize + flip + ' * (name == 'windows')
      + 'colour jitter + ' * (args.augment == 'imagenet')
      + 'normalise'
    )
    print(f"  {name}: the step's part ({moved}) jitted on this CPU: {1e3 / device:.3f} ms/image")
  print(
    f'  per core: windows / old = {new / old:.2f}x, uint8 / old = {uint8 / old:.2f}x; '
    f'windows / issue baseline ({ISSUE_BASELINE_RATE:.0f}/s) = '
    f'{new / ISSUE_BASELINE_RATE:.2f}x, uint8 / issue baseline = '
    f'{uint8 / ISSUE_BASELINE_RATE:.2f}x'
  )
  on_host, count = _windows_on_host(args, paths[3][2], sources[-1])
  print(f'  windows resized on the host (larger than the canvas): {on_host} of {count}')
  pixels, canvas = args.image_size**2 * 3, 2 * args.image_size
  print(
    f'  host -> device per image: {4 * pixels / 1e3:,.1f} KB float32, '
    f'{pixels / 1e3:,.1f} KB uint8 crops, {canvas**2 * 3 / 1e3:,.1f} KB windows'
  )
  print(
    f'  for {args.target_rate:,.0f} images/s: num_workers >= '
    f'{math.ceil(args.target_rate / new)} = ceil({args.target_rate:,.0f} / {new:,.0f}) '
    f'with windows (uint8: {math.ceil(args.target_rate / uint8)}, old: '
    f'{math.ceil(args.target_rate / old)}), +1 core for the trainer'
  )


def main(argv=None) -> None:
  from configs import base  # pylint: disable=import-outside-toplevel
  from rankdeficit.data import local_import  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--dataset', default='cifar10_jpeg')
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--augment', default='cifar')
  parser.add_argument('--in_memory', default='both', choices=('both', 'on', 'off'))
  parser.add_argument('--model_width', type=int, default=2048)
  parser.add_argument('--image_size', type=int, default=224, help='imagenet/vit crop size')
  parser.add_argument('--jpeg_dir', default=None, help='tfds data_dir of --jpeg_dataset')
  parser.add_argument(
    '--jpeg_dataset',
    default='jpeg_bench',
    help='tfds name of JPEG images in --jpeg_dir (made when no --jpeg_dir)',
  )
  parser.add_argument('--jpeg_size', default='400x350', help='WIDTHxHEIGHT of made JPEGs')
  parser.add_argument('--jpeg_count', type=int, default=300)
  parser.add_argument('--jpeg_noise', type=float, default=16.0)
  parser.add_argument('--repeats', type=int, default=3, help='median of, per path')
  parser.add_argument(
    '--target_rate',
    type=float,
    default=12000.0,
    help='images/s the host must feed (default: 4 TPU v4 chips)',
  )
  args = parser.parse_args(argv)
  if args.augment in ('imagenet', 'vit'):
    return imagenet_transform_rates(args)
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = tempfile.mkdtemp(prefix='rankdeficit_bench_')
    local_import.import_cifar10_jpeg(data_dir, limit_train=5000, limit_test=100)
  config = base.get_config()
  base.mlp_recipe(config)
  config.model.width, config.model.depth = args.model_width, 8
  config.dataset, config.data_dir, config.augment = args.dataset, data_dir, args.augment
  config.batch_size = args.batch_size
  model_rate = step_rate(config, args.seconds)
  print(
    f'MLP 8x{args.model_width} train step, batch {args.batch_size}: {model_rate:,.0f} images/s',
    flush=True,
  )
  modes = {'both': (True, False), 'on': (True,), 'off': (False,)}[args.in_memory]
  for in_memory in modes:
    for workers in (int(w) for w in args.workers.split(',')):
      config.num_workers, config.in_memory = workers, in_memory
      rate = pipeline_rate(config, args.seconds)
      print(
        f'{args.dataset} augment={args.augment} batch={args.batch_size} '
        f'in_memory={in_memory} num_workers={workers}: {rate:,.0f} images/s = '
        f'{rate / model_rate:.1f}x the MLP step rate'
        f'{"" if rate >= 5 * model_rate else "  (below the 5x target)"}',
        flush=True,
      )


if __name__ == '__main__':
  main()
