"""How the collapse monitor's metrics reach CLU's metric writers (TensorBoard).

`write_collapse_metrics` sorts a `monitor.collapse_metrics` dict by array dimension: scalars,
spectra (histograms, plus the top singular value as a scalar) and alignment matrices
(images). The exact values go to the run's `monitor/` history instead
(rankdeficit/training/monitor_log.py).
"""

from typing import Any

import jax
import numpy as np


def write_collapse_metrics(
  writer, step: int, metrics: dict[str, Any], *, prefix: str = 'monitor/'
) -> None:
  """Write a ``collapse_metrics`` dict through a CLU ``MetricWriter``.

  0-d values -> ``write_scalars`` (plus ``sigma_1`` of every spectrum); 1-d spectra ->
  ``write_histograms``; 2-d alignment matrices -> ``write_images`` as ``[1, k, k, 1]``
  clipped to ``[0, 1]`` (absolute cosines: brightness comparable across steps). Spectra and
  matrices with a non-finite entry (a diverging run) are left out of the histograms and
  images, which cannot hold them; their scalars still record the NaN.
  """
  host = jax.device_get(metrics)
  scalars, hists, images = {}, {}, {}
  for name, value in host.items():
    value = np.asarray(value)
    tag = prefix + name
    if value.ndim == 0:
      scalars[tag] = value.item()
    elif value.ndim == 1:
      if np.isfinite(value).all():  # CLU's histograms raise on NaN; the scalar keeps it
        hists[tag] = value.astype(np.float32)
      scalars[tag + '/sigma_1'] = float(value[0]) if value.size else float('nan')
    elif value.ndim == 2 and np.isfinite(value).all():
      images[tag] = np.clip(value.astype(np.float32), 0.0, 1.0)[None, :, :, None]
  if scalars:
    writer.write_scalars(step, scalars)
  if hists:
    writer.write_histograms(step, hists)
  if images:
    writer.write_images(step, images)
