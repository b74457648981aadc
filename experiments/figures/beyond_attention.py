"""Attention-temperature experiment (issue 12.1): figure, tables and caption from run folders.

Every number comes from the run directories of `experiments/attention_temperature.py`
(`runs.read_run`; nothing is trained here):
- `monitor/metrics.jsonl`: `attention/<stat>/block_<i>` on the fixed monitor batch of test
  images, every `metrics_every_steps` (curves; the last record is the table's "final");
- `train_results.json`: `eval/accuracy` on the whole test split at the end of training;
- `analysis/analysis.json`: kappa / rho in the paper's probe convention.

Heads are aggregated as the monitor does (`rankdeficit/metrics/attention.py`): a statistic of
each (example, head) queries x keys attention matrix (rank, effective rank) or of each
query's distribution (entropy, logits norm, then the mean over queries), the mean over the
batch's examples per head, then the mean over heads. Seeds: mean and sample std.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

from experiments import markdown_table
from experiments.figures.render import MissingRuns
from experiments.figures.render import mean_std
from experiments.figures.render import pyplot
from experiments.figures.render import save_png
from experiments.figures.runs import Run
from experiments.figures.runs import metric

NAME = 'attention_temperature'
STATS = ('rank', 'effective_rank', 'entropy', 'logits_norm')
STAT_TITLES = {
  'rank': 'rank',
  'effective_rank': 'erank',
  'entropy': 'entropy (nats)',
  'logits_norm': 'attn. logits norm',
}
RUN_METRICS = ('test_accuracy', 'kappa', 'rho')
CONVENTION = 'paper'  # kappa / rho over hidden layers + the final layer pre-softmax

REFERENCES = (
  'Related work: Dong et al. (2021), "Attention is not all you need: pure attention loses '
  'rank doubly exponentially with depth" (rank collapse of attention without skips/MLPs); '
  'Zhai et al. (2023), "Stabilizing transformer training by preventing attention entropy '
  'collapse" (low attention entropy with large attention logits); Kobayashi et al. (2024), '
  '"Weight decay induces low-rank attention layers". The mechanism tested here is the '
  'paper\'s (Masarczyk et al., "Unpacking Softmax", Fig. 6, Prop. 3.1): the rank of '
  'softmax(z / tau) grows with the norm of z / tau, so a large tau (small attention logits) '
  'should give low-rank, near-uniform attention maps.'
)

Groups = dict  # {(tau, T): [Run]}


def attention_layers(runs: Sequence[Run]) -> list[str]:
  """Attention layers ('block_<i>') in forward order, from the monitor's record names."""
  prefix = 'attention/effective_rank/'
  names = {n[len(prefix) :] for r in runs for n in r.monitor.names(prefix)}
  return sorted(names, key=lambda n: int(n.rsplit('_', 1)[1]))


def series(runs: Sequence[Run], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Steps and seed mean / std of a monitor scalar (seeds truncated to common steps)."""
  runs = [r for r in runs if len(r.monitor.steps)]
  n = min(len(r.monitor.steps) for r in runs)
  values = np.stack([r.monitor.scalar(name)[:n] for r in runs])
  std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(n)
  return runs[0].monitor.steps[:n], values.mean(axis=0), std


def final_value(run: Run, name: str) -> float | None:
  """The monitor's last record of `name` (the end of training), None when absent."""
  values = run.monitor.scalar(name) if len(run.monitor.steps) else np.zeros(0)
  values = values[np.isfinite(values)]
  return float(values[-1]) if values.size else None


def run_metric(run: Run, name: str) -> float | None:
  """test accuracy (whole test split, end of training) or kappa / rho (paper convention)."""
  if name == 'test_accuracy':
    value = run.train_results.get('eval/accuracy')
    return None if value is None else float(value)
  return None if run.analysis is None else metric(run.analysis, name, CONVENTION)


@dataclasses.dataclass(frozen=True)
class Row:
  """Seed mean / std of every reported quantity of one (tau, T, layer)."""

  tau: float
  temperature: float
  layer: str
  seeds: int
  values: dict  # name -> (mean, std); names: RUN_METRICS + STATS


def summary_rows(groups: Groups, layers: Sequence[str]) -> list[Row]:
  rows = []
  for (tau, t), runs in sorted(groups.items()):
    per_run = {m: mean_std([run_metric(r, m) for r in runs]) for m in RUN_METRICS}
    for layer in layers:
      values = dict(per_run)
      values.update(
        {s: mean_std([final_value(r, f'attention/{s}/{layer}') for r in runs]) for s in STATS}
      )
      rows.append(Row(tau, t, layer, len(runs), values))
  return rows


def _pm(mean: float, std: float, *, percent: bool = False, seeds: int = 1) -> str:
  if np.isnan(mean):
    return 'n/a'
  scale, digits = (100.0, 1) if percent else (1.0, 2)
  text = f'{scale * mean:.{digits}f}'
  return text + (f' ± {scale * std:.{digits}f}' if seeds > 1 else '')


def run_table(rows: Sequence[Row]) -> tuple[list[str], list[list]]:
  """Markdown table: one row per (tau, T) with test accuracy, kappa and rho (%)."""
  header = [
    'tau',
    'T',
    'seeds',
    'test acc (%)',
    f'kappa (%, {CONVENTION})',
    f'rho (%, {CONVENTION})',
  ]
  seen, body = set(), []
  for row in rows:
    if (row.tau, row.temperature) in seen:
      continue
    seen.add((row.tau, row.temperature))
    body.append(
      [f'{row.tau:g}', f'{row.temperature:g}', row.seeds]
      + [_pm(*row.values[m], percent=True, seeds=row.seeds) for m in RUN_METRICS]
    )
  return header, body


def layer_table(rows: Sequence[Row]) -> tuple[list[str], list[list]]:
  """Markdown table: one row per (tau, T, layer) with the final attention statistics."""
  header = ['tau', 'T', 'layer'] + [STAT_TITLES[s] for s in STATS]
  body = [
    [f'{r.tau:g}', f'{r.temperature:g}', r.layer]
    + [_pm(*r.values[s], seeds=r.seeds) for s in STATS]
    for r in rows
  ]
  return header, body


def write_csv(rows: Sequence[Row], path: str) -> None:
  """Long format: tau, T, layer, seeds, then <name>_mean / <name>_std (fractions, not %)."""
  names = RUN_METRICS + STATS
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(
      ['tau', 'temperature', 'layer', 'seeds']
      + [f'{n}_{k}' for n in names for k in ('mean', 'std')]
    )
    for r in rows:
      writer.writerow(
        [r.tau, r.temperature, r.layer, r.seeds] + [v for n in names for v in r.values[n]]
      )


def _erank_panels(axes, groups: Groups, layers: Sequence[str], temps, colors) -> None:
  """One row per output T, one column per layer: attention erank over training per tau."""
  top = 0.0
  for i, t in enumerate(temps):
    for j, layer in enumerate(layers):
      ax = axes[i][j]
      for tau, color in colors.items():
        runs = [r for r in groups.get((tau, t), []) if len(r.monitor.steps)]
        if not runs:
          continue
        steps, mean, std = series(runs, f'attention/effective_rank/{layer}')
        ax.plot(steps, mean, color=color, label=f'tau = {tau:g}')
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        top = max(top, float(np.nanmax(mean + std)))
      ax.set_title(f'output T = {t:g}, attention {layer}', fontsize=8)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=7)
      if j == 0:
        ax.set_ylabel('attention erank', fontsize=8)
      if i == len(temps) - 1:
        ax.set_xlabel('training step', fontsize=8)
  for row in axes[: len(temps)]:
    for ax in row[: len(layers)]:
      ax.set_ylim(0, 1.05 * top if top > 0 else 1)
  axes[0][0].legend(fontsize=7)


def _summary_panels(axes, rows: Sequence[Row], temps, colors) -> None:
  """Accuracy / kappa / rho against tau per output T, then erank against the logits norm."""
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel

  titles = {'test_accuracy': 'test accuracy (%)', 'kappa': 'kappa (%)', 'rho': 'rho (%)'}
  first = {}
  for row in rows:  # one entry per (tau, T)
    first.setdefault((row.tau, row.temperature), row)
  for ax, name in zip(axes, RUN_METRICS):
    for k, t in enumerate(temps):
      points = sorted((tau, r.values[name]) for (tau, tt), r in first.items() if tt == t)
      taus = [p[0] for p in points]
      means = [100 * p[1][0] for p in points]
      stds = [100 * p[1][1] for p in points]
      ax.errorbar(taus, means, stds, marker='os^v'[k % 4], capsize=2, label=f'T = {t:g}')
    ax.set_xscale('log', base=2)
    ax.set_xticks(sorted(colors), [f'{tau:g}' for tau in sorted(colors)])
    ax.set_xlabel('attention temperature tau', fontsize=8)
    ax.set_title(titles[name], fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
  axes[0].legend(fontsize=7)
  ax = axes[3]
  for row in rows:
    x, y = row.values['logits_norm'][0], row.values['effective_rank'][0]
    marker = 'os^v'[temps.index(row.temperature) % 4]
    ax.scatter(x, y, color=colors[row.tau], marker=marker, s=14)
  ax.set_xscale('log')
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # overlapping minor labels
  ax.set_xlabel('final attention logits norm', fontsize=8)
  ax.set_ylabel('final attention erank', fontsize=8)
  ax.set_title('every layer (colour: tau, marker: T)', fontsize=8)
  ax.grid(alpha=0.3)
  ax.tick_params(labelsize=7)


def draw_figure(groups: Groups, layers: Sequence[str], rows: Sequence[Row]):
  """The matplotlib figure: erank curves (rows: output T; columns: layers) + summaries."""
  plt = pyplot()
  taus = sorted({tau for tau, _ in groups})
  temps = sorted({t for _, t in groups})
  colors = {tau: f'C{i}' for i, tau in enumerate(taus)}
  cols = max(len(layers), 4)
  fig, axes = plt.subplots(
    len(temps) + 1, cols, figsize=(2.7 * cols, 2.3 * (len(temps) + 1)), squeeze=False
  )
  _erank_panels(axes, groups, layers, temps, colors)
  _summary_panels(axes[-1], rows, temps, colors)
  for i, row in enumerate(axes):
    for ax in row[len(layers) if i < len(temps) else 4 :]:
      ax.axis('off')
  fig.tight_layout()
  return fig


def describe_setup(run: Run) -> str:
  """Model, data and budget of a run, from its config.json and analysis.json."""
  from rankdeficit.models import vit  # pylint: disable=import-outside-toplevel

  c, model = run.config, run.config.get('model', {})
  spec = vit.VIT_SPECS.get(model.get('name'))
  arch = model.get('name', '?')
  if spec:
    patch, width, depth, heads, mlp_dim = spec
    arch += (
      f' (patch {patch}, width {width}, depth {depth}, {heads} heads, MLP {mlp_dim}, '
      f'{model.get("init")} init)'
    )
  steps = int(run.monitor.steps[-1]) if len(run.monitor.steps) else '?'
  text = (
    f'Model: {arch}, trained from scratch. Data: {c.get("dataset")} '
    f'({c.get("train_subset") or "all"} training images, augment '
    f'{c.get("augment")!r}), OOD probes on {c.get("ood_dataset")}. Budget: {steps} '
    f'steps of batch {c.get("batch_size")} ({c.get("optimizer")}, lr '
    f'{c.get("learning_rate")}, warmup {c.get("warmup_epochs")} epoch(s), x'
    f'{c.get("lr_gamma")} at epochs {list(c.get("lr_milestones") or [])}, weight decay '
    f'{c.get("weight_decay")}). Monitor: every {c.get("metrics_every_steps")} steps on '
    f'the first {c.get("metrics_batch_size")} test images.'
  )
  if run.analysis:
    probe = run.analysis.get('probe_config', {})
    sizes = ', '.join(f'{k} {v}' for k, v in (run.analysis.get('num_examples') or {}).items())
    text += (
      f' Analysis (kappa / rho): linear probes on random subsets ({sizes} examples), '
      f'<= {probe.get("max_dims")} coordinates per layer, '
      f'{probe.get("epochs")} epochs of batch {probe.get("batch_size")}.'
    )
  return text


def caption(
  groups: Groups, rows: Sequence[Row], expected: Sequence[tuple[float, float]], command: str
) -> str:
  """The .md next to the PNG: what is plotted, setup, tables, references, how to rerun."""
  any_run = next(r for rs in groups.values() for r in rs)
  found = ', '.join(f'(tau {tau:g}, T {t:g}): {len(rs)}' for (tau, t), rs in sorted(groups.items()))
  missing = [f'(tau {tau:g}, T {t:g})' for tau, t in expected if (tau, t) not in groups]
  parts = [
    '# Attention temperature: rank of the attention softmax (issue 12.1)',
    '',
    f'![{NAME}]({NAME}.png)',
    '',
    'Top rows: effective rank (Roy & Vetterli) of the attention-probability matrices '
    'softmax(q k^T / (tau sqrt(d_head))) of every attention layer over training, one row '
    "per output temperature T (the paper's softmax(z / T) in the loss), one line per "
    'attention temperature tau; mean over seeds, band +- 1 std. Bottom row: test accuracy, '
    f'kappa and rho ({CONVENTION} convention: hidden layers + the final layer '
    'pre-softmax; %) against tau per T, mean +- std over seeds; then the final erank of '
    'every layer against its final attention logits norm (mean per-query L2 norm of '
    'q k^T / (tau sqrt(d_head))).',
    '',
    'Heads: each statistic is taken per (example, head) queries x keys matrix (rank: '
    'numerical rank, PyTorch tolerance; erank) or per query distribution (entropy in nats, '
    'logits norm; then averaged over queries), averaged over the monitor batch per head, '
    'then over heads, exactly as `attention/<stat>/block_<i>` in the monitor '
    '(`rankdeficit/metrics/attention.py`). "Final" = the last monitor record (end of '
    'training). Test accuracy: the whole test split at the end of training.',
    '',
    describe_setup(any_run),
    '',
    f'Seeds per (tau, T): {found}.'
    + (f' Not finished (left out): {", ".join(missing)}.' if missing else ''),
    '',
    '## Accuracy, kappa, rho',
    '',
    markdown_table(*run_table(rows)),
    '',
    '## Final attention statistics per layer',
    '',
    markdown_table(*layer_table(rows)),
    '',
    REFERENCES,
    '',
    f'Regenerate: `{command}` (CSV: `{NAME}.csv`, long format).',
    '',
  ]
  return '\n'.join(parts)


def render(
  outdir: str, groups: Groups, expected: Sequence[tuple[float, float]], command: str
) -> list[Row]:
  """Writes `<outdir>/attention_temperature.{png,md,csv}` from finished runs.

  Args:
    outdir: output folder.
    groups: {(tau, T): [finished, analysed Run]}; configurations without runs are left out.
    expected: every (tau, T) of the experiment (the caption lists those missing).
    command: the command line that regenerates the outputs (for the caption).
  Returns:
    The table rows (one per (tau, T, layer)).
  Raises:
    MissingRuns: no finished run, or none with attention records in its monitor.
  """
  groups = {k: v for k, v in groups.items() if v}
  if not groups:
    raise MissingRuns(f'no finished attention-temperature run for {NAME}')
  layers = attention_layers([r for rs in groups.values() for r in rs])
  if not layers:
    raise MissingRuns(
      'the runs hold no attention/<stat>/block_<i> monitor records '
      '(metrics_every_steps = 0, or not a ViT)'
    )
  rows = summary_rows(groups, layers)
  os.makedirs(outdir, exist_ok=True)
  save_png(draw_figure(groups, layers, rows), os.path.join(outdir, f'{NAME}.png'))
  write_csv(rows, os.path.join(outdir, f'{NAME}.csv'))
  with open(os.path.join(outdir, f'{NAME}.md'), 'w') as f:
    f.write(caption(groups, rows, expected, command))
  return rows
