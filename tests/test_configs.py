"""Every config loads, names a known model/dataset, and carries the paper's Table 4 values."""

import importlib
from pathlib import Path

import ml_collections
import pytest

from rankdeficit import models
from rankdeficit.data import input_pipeline
from rankdeficit.plan import validation
from rankdeficit.training import losses
from rankdeficit.training import optim

CONFIGS = sorted(
  p.stem
  for p in (Path(__file__).parents[1] / 'configs').glob('*.py')
  if p.stem not in ('__init__', 'base')
)

# Paper Table 4: (lr, momentum, weight decay, epochs, batch, milestones).
TABLE4 = {
  'vgg19_c10': (0.1, 0.9, 1e-4, 160, 128, (80, 120)),
  'vgg19_c100': (0.1, 0.9, 1e-4, 160, 128, (80, 120)),
  'resnet18_c10': (0.1, 0.9, 1e-4, 164, 128, (82, 123)),
  'resnet20_c10': (0.1, 0.9, 1e-4, 164, 128, (82, 123)),
  'resnet18_c100': (0.1, 0.9, 1e-4, 164, 128, (82, 123)),
  'resnet34_c100': (0.1, 0.9, 1e-4, 164, 128, (82, 123)),
  'mlp_c10': (0.05, 0.0, 0.0, 100, 128, ()),
  'resnet34_in100': (1.6, 0.9, 1e-4, 120, 1024, (30, 60, 90)),
  'resnet50_in100': (1.6, 0.9, 1e-4, 120, 1024, (30, 60, 90)),
  'resnet34_in1k': (1.6, 0.9, 1e-4, 120, 1024, (30, 60, 90)),
  'resnet50_in1k': (1.6, 0.9, 1e-4, 120, 1024, (30, 60, 90)),
}


def load(name) -> ml_collections.ConfigDict:
  return importlib.import_module(f'configs.{name}').get_config()


def test_every_paper_experiment_has_a_config():
  expected = set(TABLE4) | {'vit_b16_c10', 'vit_b16_c100'}
  assert expected <= set(CONFIGS)
  assert any(name.endswith('_cpu') for name in CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_names_known_things(name):
  c = load(name)
  assert c.model.name in models.MODEL_NAMES
  assert c.dataset in input_pipeline.DATASET_NAMES
  for ood in (c.ood_dataset, c.ood_detection_dataset):
    assert ood == '' or ood in input_pipeline.DATASET_NAMES
  assert c.loss in losses.LOSS_NAMES and c.optimizer in optim.OPTIMIZER_NAMES
  assert c.augment in validation.AUGMENTATIONS
  assert c.temperature > 0


@pytest.mark.parametrize('name', sorted(TABLE4))
def test_table4_hyperparameters(name):
  c = load(name)
  got = (
    c.learning_rate,
    c.momentum,
    c.weight_decay,
    c.num_epochs,
    c.batch_size,
    tuple(c.lr_milestones),
  )
  assert got == TABLE4[name]


def test_unknown_fields_are_rejected_and_overrides_typed():
  c = load('resnet34_c100')
  c.lock()
  with pytest.raises(AttributeError):
    c.temprature = 100.0  # typo
  with pytest.raises(TypeError):
    c.temperature = 'hot'
  c.temperature = 100  # int into a float field is fine
  assert c.temperature == 100.0
