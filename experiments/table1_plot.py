"""Per-layer probe accuracy and effective rank of a Table 1 reproduction, over seeds.

    python -m experiments.table1_plot --outdir=experiments/results/table1_paper_cpu

Reads `<outdir>/runs.jsonl` (one line per run, written by `reproduce_table1`) and draws
`<outdir>/probe_profiles.png`: one column per setting (experiment), the ID and OOD linear
probe accuracy of every probed layer on top and the layer's effective rank below (when
runs.jsonl has ranks), one colour per temperature, the line the mean over seeds and the
band +-1 std. kappa and rho are single numbers read off these curves; the curves show why
they come out as they do (e.g. ID probes that peak mid-network and fall towards the logits
put kappa at 1/L under the `paper` convention).
"""

from __future__ import annotations

import collections
import os

from absl import app
from absl import flags
import numpy as np

from experiments import records


def _by_setting(records: list[dict]) -> dict[str, dict[float, list[dict]]]:
  """{experiment: {temperature: [record per seed]}}, in the order records first name them;
  of two records of one seed (an old runs.jsonl appended to) the later one counts."""
  latest = {(r['experiment'], float(r['temperature']), r.get('seed')): r for r in records}
  out: dict[str, dict[float, list[dict]]] = collections.defaultdict(
    lambda: collections.defaultdict(list)
  )
  for (experiment, temperature, _), rec in latest.items():
    out[experiment][temperature].append(rec)
  return out


def _curve(runs: list[dict], key: str, layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std (ddof 1; 0 for one seed) over runs of `run[key][layer]` per layer."""
  values = np.array([[run[key][l] for l in layers] for run in runs], np.float64)
  std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(layers))
  return values.mean(axis=0), std


def _band(ax, x, mean, std, **style):
  (line,) = ax.plot(x, mean, **style)
  ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def _draw_temperature(top, bottom, runs: list[dict], temperature: float, colour: str):
  """Draws one temperature's seed bands: probe accuracies on `top`, effective rank on `bottom`.

  Returns the probed layers and their x positions.
  """
  layers = list(runs[0]['id_probe_accuracy'])
  x = np.arange(1, len(layers) + 1)
  t = f'T={temperature:g}'
  curves = [(top, 'id_probe_accuracy', {'marker': 'o'}, f'{t} ID ({len(runs)} seeds)')]
  if runs[0].get('ood_probe_accuracy'):
    curves.append((top, 'ood_probe_accuracy', {'marker': 's', 'ls': '--'}, f'{t} OOD'))
  if bottom is not None and runs[0].get('representation_effective_rank'):
    curves.append((bottom, 'representation_effective_rank', {'marker': 'o'}, t))
  for ax, key, style, label in curves:
    _band(ax, x, *_curve(runs, key, layers), color=colour, ms=3, label=label, **style)
  return layers, x


def _label_column(top, bottom, layers: list[str], x: np.ndarray, title: str) -> None:
  """Labels one setting's column: layer ticks, grids, legends, title, y axes (no rank row: None)."""
  for ax in (top, bottom) if bottom is not None else (top,):
    ax.set_xticks(x, layers, rotation=45, ha='right', fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  top.set_title(title, fontsize=8)
  top.set_ylim(0, 1)
  top.set_ylabel('linear probe accuracy')
  if bottom is not None:
    bottom.set_yscale('log')
    bottom.set_ylabel('effective rank (ID test)')


def _save_png(fig, path: str) -> None:
  """Writes `fig` to `path` as a PNG that a reader never sees half written."""
  # Per-process temporary name: two reproduce_table1 calls may draw into one outdir.
  tmp = f'{path}.tmp{os.getpid()}'
  fig.savefig(tmp, format='png', dpi=100)
  os.replace(tmp, path)


def plot_probe_profiles(records: list[dict], path: str) -> None:
  """Writes the figure described in the module docstring for `records` to `path` (PNG).

  Raises:
    ValueError: no record has per-layer probe accuracies.
  """
  records = [r for r in records if r.get('id_probe_accuracy')]
  if not records:
    raise ValueError('plot_probe_profiles: no run has per-layer probe accuracies')
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  settings = _by_setting(records)
  ranks = any(r.get('representation_effective_rank') for r in records)
  fig, axes = plt.subplots(
    1 + ranks, len(settings), figsize=(4.2 * len(settings), 3.2 * (1 + ranks)), squeeze=False
  )
  for col, (name, by_t) in enumerate(settings.items()):
    top, bottom = axes[0, col], axes[-1, col] if ranks else None
    for i, (temperature, runs) in enumerate(sorted(by_t.items())):
      layers, x = _draw_temperature(top, bottom, runs, temperature, f'C{i}')
    _label_column(top, bottom, layers, x, runs[0].get('label') or name)
  fig.tight_layout()
  _save_png(fig, path)
  plt.close(fig)


def main(argv):
  del argv
  outdir = flags.FLAGS.outdir
  path = os.path.join(outdir, 'probe_profiles.png')
  plot_probe_profiles(list(records.read_runs(outdir).values()), path)
  print(f'Wrote {path}')


if __name__ == '__main__':
  flags.DEFINE_string(
    'outdir', None, 'A reproduce_table1 output folder (has runs.jsonl).', required=True
  )
  app.run(main)
