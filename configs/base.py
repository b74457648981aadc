"""Shared defaults for every rankdeficit experiment.

Each experiment config calls `get_config()` and overrides what differs (paper Table 4).
Every field can be overridden from the command line, e.g.
`--config.temperature=100 --config.model.width=512`; unknown fields are rejected because the
returned ConfigDict is locked.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # --- Data (rankdeficit/data/input_pipeline.py) ---
  # cifar10 | cifar100 | svhn_cropped | imagenet2012 | imagenet100 | mnist | cifar10_jpeg |
  # tiny_imagenet32 | digits
  c.dataset = 'cifar10'
  c.ood_dataset = 'svhn_cropped'  # OOD set of the OOD linear probes ('' = none)
  c.ood_detection_dataset = ''  # OOD set for NECO detection ('' = same as ood_dataset)
  # tfds data_dir; None -> $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data_dir = config_dict.placeholder(str)
  # Missing cifar10/cifar100/svhn_cropped/mnist: tfds download+prepare (array_record) on
  # first use; ImageNet stays manual.
  c.download = True
  c.train_subset = 0  # N training examples: the first N (evenly spaced if class-sorted); 0 = all
  c.augment = 'cifar'  # cifar | imagenet | vit | none
  c.image_size = 32  # network input resolution (images are resized when it differs)
  c.num_workers = 0  # grain worker processes per host (0 = in-process)
  c.in_memory = True  # decode fixed-size datasets (all but ImageNet) once into host memory
  c.device_resize_canvas = 0  # imagenet/vit: N > 0 ships crop windows (NxN) for the step to resize
  c.input_on_device = False  # in-memory datasets: data, shuffle, cifar/none augment on the devices
  c.steps_per_dispatch = 1  # input_on_device: train steps per jitted call (lax.scan)
  c.batch_size = 128  # global batch, split over all devices of all hosts
  c.eval_batch_size = 500  # global; the last batch is padded and masked

  # --- Model (rankdeficit/models) ---
  c.model = ml_collections.ConfigDict()
  # mlp | vgg19 | vgg19_bn | resnet18 | resnet20 | resnet34 | resnet50 | vit_b16 | vit_ti16 |
  # vit_tiny
  c.model.name = 'resnet18'
  c.model.num_classes = config_dict.placeholder(int)  # None -> the dataset's number of classes
  c.model.width = 2048  # MLP hidden width
  # MLP hidden Dense+ReLU layers; the net has depth + 1 Dense layers (configs/mlp_c10.py)
  c.model.depth = 8
  c.model.stem = 'cifar'  # ResNet stem: cifar (3x3, no max-pool) | imagenet (7x7 + max-pool)
  c.model.init = 'kaiming'  # kaiming | pytorch | normal (paper App. E)
  c.model.init_sigma = 0.01  # std of the 'normal' init
  c.model.layer_norm = False  # LayerNorm after every hidden layer (MLP)
  # ViT: softmax(q k^T / (tau sqrt(d))) in every attention layer
  c.model.attention_temperature = 1.0
  # Compute dtype: float32 | bfloat16 (= half precision: bf16 activations, float32 parameters
  # and optimizer state, as flax's ImageNet example; on in the ImageNet recipe). The monitor
  # and analysis always measure features in float32 at HIGHEST precision (a bf16 forward
  # inflates ranks): models.measurement_model.
  c.model.dtype = 'float32'
  # Conv formulation (rankdeficit/models/cpu_conv.py): auto = per-shape im2col+dot or XLA conv
  # on the CPU backend, XLA's native conv on GPU/TPU | xla | im2col | cpu. Numerics equal up to
  # summation order; parameters and checkpoints are the same whatever the choice.
  c.model.conv_impl = 'auto'
  c.model.pretrained_path = ''  # local .npz of pretrained weights (ViT); never downloaded

  # --- Loss ---
  c.loss = 'ce'  # ce: cross-entropy of softmax(logits / T) | mse: MSE(softmax(logits / T), one-hot)
  c.temperature = 1.0
  # > 0: ignore `temperature`; at step 0 measure the initial logits norm n0 (mean per-sample
  # L2 on the first eval batch) and train at T = n0 / target_logits_norm
  # (rankdeficit/training/target_norm.py).
  c.target_logits_norm = 0.0
  c.temperature_schedule = 'constant'  # constant | linear | cosine | step
  c.final_temperature = config_dict.placeholder(float)  # target of non-constant schedules
  c.temperature_milestones = ()  # epochs of the 'step' schedule

  # --- Optimiser (rankdeficit/training/optim.py) ---
  c.optimizer = 'sgd'  # sgd | adam
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 1e-4  # coupled, added to the gradient as in torch.optim.SGD
  c.num_epochs = 164
  c.lr_milestones = (82, 123)  # epochs
  c.lr_gamma = 0.1
  c.warmup_epochs = 0

  # --- Loop, logging, checkpoints (rankdeficit/training/train.py) ---
  c.num_train_steps = -1  # -1 -> num_epochs * steps_per_epoch
  c.log_every_steps = 100
  c.eval_every_steps = -1  # -1 -> once per epoch
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # Collapse monitor (rankdeficit/training/monitor.py) on a fixed batch every K steps (0 = off).
  # Overhead = t_monitor / (K * t_step + t_monitor); pick K >= 19 * t_monitor / t_step for
  # < 5% (measure both: python -m tools.benchmark_metrics --fraction configs/<cfg>.py).
  # CPU (2 cores, measured): 8x512 MLP t_monitor/t_step ~45 -> K >= ~860; ResNet-20 ~10-12
  # -> K >= ~240. On GPU/TPU steps are ~50x faster but SVD/eigh much less so: expect
  # t_monitor/t_step in the hundreds-thousands, i.e. K of a few epochs (set per config).
  c.metrics_every_steps = 1000
  c.metrics_batch_size = 512
  c.metrics_input_ranks = False  # also rank/input/<layer> (mostly = previous rep's rank)
  c.max_feature_dims = 10000  # random subset of feature coordinates for per-layer ranks
  # --- Multi-host and run environment (rankdeficit/run/distributed.py, runtime.py) ---
  c.distributed = False  # jax.distributed.initialize() auto-detection (TPU pod, SLURM)
  c.compilation_cache_dir = ''  # JAX persistent compilation cache (local or gs://; '' = off)
  c.profile = False  # trace profile_num_steps steps from profile_first_step on process 0
  c.profile_first_step = 10
  c.profile_num_steps = 5
  c.matmul_precision = 'default'  # jax_default_matmul_precision for training
  return c


# --- Paper Table 4, one function per column (each config applies one) ---


def cifar_resnet_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ResNet on CIFAR-10/100: SGD lr 0.1, momentum 0.9, wd 1e-4, 164 epochs, decay at 82/123."""
  c.learning_rate, c.momentum, c.weight_decay = 0.1, 0.9, 1e-4
  c.num_epochs, c.lr_milestones, c.lr_gamma, c.batch_size = 164, (82, 123), 0.1, 128
  c.model.stem, c.model.init = 'cifar', 'kaiming'
  return c


def vgg_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """VGG-19 on CIFAR-10/100: SGD lr 0.1, momentum 0.9, wd 1e-4, 160 epochs, decay at 80/120."""
  c.model.name, c.model.init = 'vgg19_bn', 'pytorch'
  c.learning_rate, c.momentum, c.weight_decay = 0.1, 0.9, 1e-4
  c.num_epochs, c.lr_milestones, c.lr_gamma, c.batch_size = 160, (80, 120), 0.1, 128
  return c


def mlp_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """MLP on CIFAR-10: SGD lr 0.05 without momentum or weight decay, 100 epochs, no decay."""
  c.model.name, c.model.init = 'mlp', 'pytorch'
  c.learning_rate, c.momentum, c.weight_decay = 0.05, 0.0, 0.0
  c.num_epochs, c.lr_milestones, c.batch_size = 100, (), 128
  return c


def imagenet_resnet_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ResNet on ImageNet-100/1k (timm defaults): lr 1.6, batch 1024, 120 epochs, decay 30/60/90."""
  c.augment, c.image_size = 'imagenet', 224
  c.model.stem, c.model.init = 'imagenet', 'kaiming'
  c.model.dtype = 'bfloat16'  # half precision on accelerators (flax's ImageNet example)
  c.learning_rate, c.momentum, c.weight_decay = 1.6, 0.9, 1e-4
  c.num_epochs, c.lr_milestones, c.lr_gamma = 120, (30, 60, 90), 0.1
  c.batch_size = c.eval_batch_size = 1024
  c.num_workers = 8
  c.ood_dataset = 'cifar100'
  c.log_every_steps, c.checkpoint_every_steps = 500, 2500
  c.metrics_every_steps = 5000  # ~4 ImageNet-1k epochs: SVD cost does not shrink with fast steps
  return c


def vit_finetune_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ViT-B/16 fine-tuning at 224 (NECO augmentations). The paper gives no budget: ours."""
  c.model.name, c.model.init = 'vit_b16', 'xavier'
  c.augment, c.image_size = 'vit', 224
  c.learning_rate, c.momentum, c.weight_decay = 0.01, 0.9, 0.0
  c.num_epochs, c.lr_milestones, c.warmup_epochs = 10, (5, 8), 1
  c.batch_size, c.eval_batch_size, c.metrics_batch_size = 128, 256, 256
  c.log_every_steps = 50
  return c


def cpu_run(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Logging/checkpoint cadence for short CPU runs on offline data in data/tfds."""
  c.data_dir = 'data/tfds'
  c.eval_batch_size = 500
  c.log_every_steps, c.checkpoint_every_steps = 50, 500
  c.metrics_every_steps = 2000  # measured: ~45 train steps per monitor call for the 8x512 MLP
  return c
