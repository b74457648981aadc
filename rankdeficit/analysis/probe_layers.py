"""Which layers kappa and rho are taken over: named conventions, all reported.

Paper A.5: "we collect representations from each layer following the nonlinear activation
function, with the exception of the final layer, where we compute statistics both before and
after applying the softmax operation." Every run is therefore probed on its hidden
post-activation layers plus two views of the final layer:

* `logits`: the final layer before the softmax, z;
* `softmax`: the final layer after it, softmax(z / T) at the run's final temperature T.

kappa (effective depth) and rho (OOD generalization loss) depend on the layer list, above all
on which layer is "the last". The conventions:

* `paper` (the default): hidden layers + `logits` (the last layer is the final layer before
  the softmax; this is the reading under which the paper's MLP has 8 probed layers);
* `post_softmax`: hidden layers + `softmax`;
* `hidden`: hidden layers only (the last layer is the penultimate one).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from rankdeficit.analysis import probes

LOGITS, SOFTMAX = 'logits', 'softmax'
FINAL_LAYERS = (LOGITS, SOFTMAX)
CONVENTIONS = ('paper', 'post_softmax', 'hidden')
DEFAULT_CONVENTION = 'paper'
DESCRIPTIONS = {
  'paper': 'hidden post-activation layers + the final layer pre-softmax (logits)',
  'post_softmax': 'hidden post-activation layers + the final layer post-softmax',
  'hidden': 'hidden post-activation layers only (last = penultimate)',
}


def layers_for(convention: str, hidden_layers: Sequence[str]) -> list[str]:
  """The probed layers of `convention`, forward order."""
  if convention not in CONVENTIONS:
    raise ValueError(
      f'Unknown probe convention {convention!r}; choose one of {", ".join(CONVENTIONS)}.'
    )
  hidden = list(hidden_layers)
  if convention == 'paper':
    return hidden + [LOGITS]
  if convention == 'post_softmax':
    return hidden + [SOFTMAX]
  return hidden


def final_layer_features(logits: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
  """{'logits': z, 'softmax': softmax(z / T)} as float32 (softmax computed in float64)."""
  if not temperature > 0:
    raise ValueError(f'temperature must be > 0, got {temperature}.')
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(axis=-1, keepdims=True)
  p = np.exp(z)
  p /= p.sum(axis=-1, keepdims=True)
  return {LOGITS: np.asarray(logits, np.float32), SOFTMAX: p.astype(np.float32)}


def _by_convention(
  fn, accuracy: Mapping[str, float], hidden_layers: Sequence[str]
) -> dict[str, float | None]:
  out = {}
  for convention in CONVENTIONS:
    layers = layers_for(convention, hidden_layers)
    try:
      out[convention] = float(fn([accuracy[l] for l in layers]))
    except ValueError:  # undefined (e.g. every accuracy 0): reported as null
      out[convention] = None
  return out


def kappa_by_convention(
  id_accuracy: Mapping[str, float], hidden_layers: Sequence[str]
) -> dict[str, float | None]:
  """Effective depth kappa under every convention, from per-layer ID probe accuracies."""
  return _by_convention(probes.effective_depth, id_accuracy, hidden_layers)


def rho_by_convention(
  ood_accuracy: Mapping[str, float], hidden_layers: Sequence[str]
) -> dict[str, float | None]:
  """OOD generalization loss rho under every convention, from per-layer OOD accuracies."""
  return _by_convention(probes.ood_generalization_loss, ood_accuracy, hidden_layers)
