"""The header of analysis.json: what was analysed and how (the run, its layers and widths,
the split sizes, the layer groups and the probe settings)."""

from __future__ import annotations

import os
from typing import Any

from rankdeficit.analysis import probe_layers
from rankdeficit.analysis.config import AnalysisConfig
from rankdeficit.run import storage


def run_header(
  workdir, run, splits, full_dims, hidden, *, coords, analysis: AnalysisConfig, groups
) -> dict[str, Any]:
  """The header of `run` (`loading.LoadedRun`) analysed on `splits` with `coords` (every
  probed layer's kept coordinates, final layers included) in layer `groups`."""
  layers = list(coords)
  return {
    'workdir': os.fspath(storage.workdir_path(workdir)),
    'step': int(run.step),
    'model': run.config.model.name,
    'dataset': run.config.dataset,
    'ood_dataset': run.config.ood_dataset or '',
    'temperature': run.temperature,
    'num_classes': run.num_classes,
    'seed': analysis.seed,
    'layers': layers,
    'hidden_layers': hidden,
    'feature_dims': {l: [int(len(coords[l])), full_dims[l]] for l in layers},
    'num_examples': {k: v.num_examples for k, v in splits.items() if k != 'det_test'},
    'layer_groups': groups,
    'probe_config': probe_config(analysis),
    'probe_conventions': probe_layers.DESCRIPTIONS,
  }


def probe_config(analysis: AnalysisConfig) -> dict[str, Any]:
  """The probe settings as analysis.json records them."""
  probe = analysis.probe
  if probe.decoupled_weight_decay:
    optimizer = {'optimizer': 'adamw', 'weight_decay_mode': 'decoupled'}
  else:
    optimizer = {
      'optimizer': 'adam (torch.optim.Adam semantics)',
      'weight_decay_mode': 'coupled L2',
    }
  return {
    **optimizer,
    'learning_rate': probe.learning_rate,
    'weight_decay': probe.weight_decay,
    'epochs': probe.num_epochs,
    'batch_size': probe.batch_size,
    'standardize': probe.standardize,
    'max_dims': analysis.max_dims,
  }
