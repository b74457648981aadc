"""Model zoo: `create_model(config.model, num_classes)` builds any of `MODEL_NAMES`.

Every model is a Flax Linen module with the same calling convention:

  logits, reps = model.apply(variables, images, train=train, mutable=[...])

* `images`: float [N, H, W, C] (NHWC, already normalised).
* `logits`: [N, num_classes] float32, whatever the compute dtype.
* `reps`: a `collections.OrderedDict` {layer name: representation} in forward order (an
  OrderedDict because jax transformations return plain dicts key-sorted), each taken after
  that layer's non-linearity; the last entry is the penultimate feature. Conv
  representations are [N, H, W, C] and ViT ones [N, tokens, D]; consumers flatten. The names
  are listed in each family's module docstring (mlp.py, vgg.py, resnet.py, vit.py).
* Models with BatchNorm (vgg19_bn, resnets) keep running statistics in the `batch_stats`
  collection: pass `mutable=['batch_stats']` with `train=True`.
* All weight layers are plain `nn.Dense` / `nn.Conv`, so they can be intercepted generically
  with `nn.intercept_methods`.

The `init` field selects the initialisation (see initializers.py). The paper's (PyTorch)
reference runs correspond to init='pytorch' for mlp / vgg19 / vgg19_bn, init='kaiming' (or
'torchvision', the exact torchvision convention) for ResNets, and 'xavier' for ViTs trained
from scratch (fine-tuning overwrites everything but the head).
"""

import dataclasses
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from rankdeficit.models import cpu_conv
from rankdeficit.models import initializers
from rankdeficit.models import mlp
from rankdeficit.models import resnet
from rankdeficit.models import vgg
from rankdeficit.models import vit
from rankdeficit.models.initializers import INIT_SCHEMES
from rankdeficit.models.initializers import Init

MODEL_NAMES = ('mlp', 'vgg19', 'vgg19_bn') + tuple(resnet.RESNET_SPECS) + tuple(vit.VIT_SPECS)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

__all__ = [
  'MODEL_NAMES',
  'INIT_SCHEMES',
  'Init',
  'MeasurementModel',
  'create_model',
  'initializers',
  'measurement_model',
  'mlp',
  'resnet',
  'vgg',
  'vit',
]


def create_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the model named `model_config.name` with a `num_classes`-way classifier.

  Half precision (`model_config.dtype='bfloat16'`) is bf16 activations with float32
  parameters and optimizer state, as in flax's ImageNet example; measure features with
  `measurement_model(model)` (float32, HIGHEST precision).

  Args:
    model_config: `config.model` (configs/base.py): name, width, depth (MLP), stem (ResNet),
      init, init_sigma, layer_norm (MLP), dtype, conv_impl (resolved here, from
      `jax.default_backend()`, so build the model on the backend it will run on). `pretrained_path`
      is not used here; load
      weights after `init` with `rankdeficit.models.vit.load_pretrained`.
    num_classes: classifier outputs (takes precedence over `model_config.num_classes`).
  Returns:
    An unbound Flax module.
  Raises:
    ValueError: unknown name, init scheme or dtype, or an option the family lacks.
  """
  name = model_config.name
  dtype, init, tau, conv = _checked_options(model_config)
  if name == 'mlp':
    return mlp.MLP(
      num_classes=num_classes,
      width=model_config.width,
      depth=model_config.depth,
      init_scheme=init,
      layer_norm=bool(model_config.layer_norm),
      dtype=dtype,
    )
  if name in ('vgg19', 'vgg19_bn'):
    return vgg.VGG(
      num_classes=num_classes,
      batch_norm=name == 'vgg19_bn',
      init_scheme=init,
      dtype=dtype,
      conv_general_dilated=conv,
    )
  if name in resnet.RESNET_SPECS:
    return resnet.resnet(
      name, num_classes, stem=model_config.stem, init=init, dtype=dtype, conv_general_dilated=conv
    )
  patch, width, depth, heads, mlp_dim = vit.VIT_SPECS[name]
  return vit.ViT(
    num_classes=num_classes,
    patch_size=patch,
    width=width,
    depth=depth,
    num_heads=heads,
    mlp_dim=mlp_dim,
    init_scheme=init,
    dtype=dtype,
    attention_temperature=tau,
  )


def _checked_options(model_config: ml_collections.ConfigDict):
  """(dtype, Init, attention temperature, conv function) of `model_config`, every option
  checked against its model family (ValueError naming the option otherwise)."""
  name = model_config.name
  if name not in MODEL_NAMES:
    raise ValueError(f'Unknown model {name!r}; valid names: {", ".join(MODEL_NAMES)}.')
  if model_config.dtype not in DTYPES:
    raise ValueError(f'Unknown dtype {model_config.dtype!r}; valid: {", ".join(DTYPES)}.')
  dtype = DTYPES[model_config.dtype]
  # (Modules call the field `init_scheme`: a field named `init` would shadow Module.init.)
  init = Init(model_config.init, float(model_config.init_sigma))
  tau = float(model_config.get('attention_temperature', 1.0))
  if not tau > 0:
    raise ValueError(f'model.attention_temperature must be > 0, got {tau}.')
  if tau != 1.0 and name not in vit.VIT_SPECS:
    raise ValueError(f'model.attention_temperature applies to ViTs only, not {name!r}.')
  conv = cpu_conv.conv_general_dilated(cpu_conv.resolve(model_config.get('conv_impl', 'auto')))
  if model_config.get('layer_norm', False) and name != 'mlp':
    raise ValueError(f'layer_norm=True is only implemented for the MLP, not {name!r}.')
  return dtype, init, tau, conv


@dataclasses.dataclass(frozen=True)
class MeasurementModel:
  """`model` computing in float32 at matmul precision HIGHEST, for measuring features.

  `apply` / `init` take and return what the wrapped module's do (same parameters); other
  attributes are the wrapped module's.
  """

  model: nn.Module

  def apply(self, *args, **kwargs):
    with jax.default_matmul_precision('highest'):
      return self.model.apply(*args, **kwargs)

  def init(self, *args, **kwargs):
    with jax.default_matmul_precision('highest'):
      return self.model.init(*args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    if name == 'model':  # not set yet (copy/unpickle): no recursion
      raise AttributeError(name)
    return getattr(self.model, name)


def measurement_model(model) -> MeasurementModel:
  """The model that the collapse monitor, SR and analysis must use to compute features.

  With `config.model.dtype='bfloat16'` (half precision: bf16 activations, float32
  parameters and optimizer state) the trained model's forward rounds every activation to 8
  mantissa bits, which inflates numerical ranks; this is the same module (same parameters
  and batch statistics) with dtype float32, its matmuls and convs at precision HIGHEST.
  """
  if isinstance(model, MeasurementModel):
    return model
  if 'dtype' in {f.name for f in dataclasses.fields(model)}:
    model = model.clone(dtype=jnp.float32)
  return MeasurementModel(model)
