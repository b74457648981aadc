"""The options of one analysis (`rankdeficit.analyze.analyze_run`): `AnalysisConfig`.

One frozen dataclass holds every option; the linear-probe settings sit inside it as a
`probes.ProbeConfig`, the single home of the probe defaults (paper Table 5). Sweep files,
experiment presets and the command line give options as a flat dict, in which
`probe_<name>` keys (`PROBE_KEYS`) set the ProbeConfig's fields:

    AnalysisConfig.from_overrides({'max_train_examples': 10_000, 'probe_epochs': 2})
    config.replace(data_dir='data/tfds')  # a copy; flat keys as well

An unknown key is refused with a one-line ValueError naming the known ones.
`define_flags` / `from_flags` give `python -m rankdeficit.analyze` one flag per flat key
(`--max_examples=N`, `--probe_epochs=N`, ...), with the defaults and help texts below.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from absl import flags

from rankdeficit.analysis import probes


def _option(default, help_text: str):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
  """Every option of `analyze_run`; the defaults are the paper's protocol."""

  ood_dataset: str | None = _option(
    None, "OOD dataset (default: the run's config.ood_dataset; '' disables OOD metrics)."
  )
  data_dir: str | None = _option(None, "tfds data_dir (default: the run's config.data_dir).")
  max_examples: int | None = _option(
    None,
    'Cap every split at a fixed random subset of N examples (SR is then over N test examples).',
  )
  max_train_examples: int | None = _option(
    None, "Overrides max_examples for the two train splits (the probes' training sets)."
  )
  probe: probes.ProbeConfig = _option(
    probes.ProbeConfig(), 'Linear-probe settings (flat keys: PROBE_KEYS).'
  )
  max_dims: int = _option(10_000, 'Feature coordinates kept per layer (paper A.5).')
  batch_size: int | None = _option(
    None, "Extraction batch (default: the run's config.eval_batch_size)."
  )
  neco_dim: int | None = _option(
    None, 'NECO PCA dimension (default: number of ID classes, <= feature width).'
  )
  step: int | None = _option(None, 'Checkpoint step (default: latest).')
  seed: int = _option(0, 'Seed of the coordinate subsets and probe shuffling.')
  layer_ranks: bool = _option(True, 'Compute per-layer representation ranks (an SVD per layer).')
  plots: bool = _option(True, 'Write the PNG figures.')
  write: bool = _option(True, 'Write workdir/analysis/ (process 0).')
  max_feature_gib: float | None = _option(
    None,
    'Memory per process for the features of one layer group (on its devices); layers '
    'are extracted in as many passes as needed (0 = all layers in one pass). Default: '
    'device_memory_fraction of each device where it reports its memory, else 6 GiB '
    '(CPU: host RAM).',
  )
  device_memory_fraction: float = _option(
    0.5,
    "Share of each accelerator's memory one layer group's features may take (the rest: "
    'the model, probes, TSQR factors); ignored where a device does not report its memory.',
  )

  @classmethod
  def from_overrides(cls, overrides: Mapping[str, Any] | None = None) -> AnalysisConfig:
    """The defaults with flat `overrides` (see `replace`)."""
    return cls().replace(**dict(overrides or {}))

  def replace(self, **overrides) -> AnalysisConfig:
    """A copy with flat overrides (`probe_*` keys set `probe`); unknown keys: ValueError."""
    unknown = sorted(set(overrides) - set(flat_keys()))
    if unknown:
      raise ValueError(
        f'Unknown analysis option(s) {", ".join(map(repr, unknown))}; known: '
        f'{", ".join(flat_keys())}.'
      )
    probe = {PROBE_KEYS[k][0]: v for k, v in overrides.items() if k in PROBE_KEYS}
    top = {k: v for k, v in overrides.items() if k not in PROBE_KEYS}
    return dataclasses.replace(self, probe=dataclasses.replace(self.probe, **probe), **top)

  def flat(self) -> dict[str, Any]:
    """Every option under its flat key (`from_overrides(c.flat()) == c`)."""
    probe = {k: getattr(self.probe, name) for k, (name, _) in PROBE_KEYS.items()}
    out = {}
    for f in dataclasses.fields(self):
      out.update(probe if f.name == 'probe' else {f.name: getattr(self, f.name)})
    return out

  def overrides(self) -> dict[str, Any]:
    """The flat options that differ from the defaults (for captions and logs)."""
    default = AnalysisConfig().flat()
    return {k: v for k, v in self.flat().items() if v != default[k]}


# Flat key -> (ProbeConfig field, help text), in flag order; covers every ProbeConfig field.
PROBE_KEYS: dict[str, tuple[str, str]] = {
  'probe_epochs': ('num_epochs', 'Linear-probe epochs.'),
  'probe_batch_size': ('batch_size', 'Linear-probe mini-batch.'),
  'probe_lr': ('learning_rate', 'Linear-probe Adam learning rate.'),
  'probe_weight_decay': ('weight_decay', 'Linear-probe weight decay.'),
  'probe_standardize': (
    'standardize',
    'Standardise each coordinate with the probe '
    "training split's mean/std (see rankdeficit/analysis/probes.py).",
  ),
  'probe_decoupled_weight_decay': (
    'decoupled_weight_decay',
    "AdamW (decoupled) weight decay instead of torch.optim.Adam's coupled L2.",
  ),
  'probe_max_group_bytes': (
    'max_group_bytes',
    'Device memory of the features of one vmapped group of probes.',
  ),
  'probe_eval_batch_size': ('eval_batch_size', "Batch of the probes' test predictions."),
}
assert sorted(n for n, _ in PROBE_KEYS.values()) == sorted(
  f.name for f in dataclasses.fields(probes.ProbeConfig)
), 'PROBE_KEYS misses a field'


def flat_keys() -> list[str]:
  return list(AnalysisConfig().flat())


def _flag_table() -> list[tuple[str, type, Any, str]]:
  """(flat key, value type, default, help) of every option."""
  default = AnalysisConfig()
  hints = {**typing.get_type_hints(probes.ProbeConfig), **typing.get_type_hints(AnalysisConfig)}
  helps = {f.name: f.metadata.get('help', '') for f in dataclasses.fields(AnalysisConfig)}
  helps.update({k: h for k, (_, h) in PROBE_KEYS.items()})
  field = lambda k: PROBE_KEYS[k][0] if k in PROBE_KEYS else k  # noqa: E731
  table = []
  for key, value in default.flat().items():
    kind = [
      t for t in typing.get_args(hints[field(key)]) or (hints[field(key)],) if t is not type(None)
    ][0]
    table.append((key, kind, value, helps[key]))
  return table


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """One absl flag per flat key, with the option's default and help text."""
  define = {
    str: flags.DEFINE_string,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
  }
  for key, kind, default, help_text in _flag_table():
    define[kind](key, default, help_text, flag_values=flag_values)


def from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> AnalysisConfig:
  """The AnalysisConfig the flags of `define_flags` give."""
  return AnalysisConfig.from_overrides({k: flag_values[k].value for k in flat_keys()})
