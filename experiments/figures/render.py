"""What every figure/table renderer shares: the registry entry, the run context, outputs.

A renderer is `render(ctx) -> None`; it reads runs with `ctx.runs(request)` (never trains),
draws with matplotlib and writes `figure_<N>.png` + `figure_<N>.md` (`ctx.save_figure`) or
`table_<N>.md` + `table_<N>.csv` (`ctx.save_table`), each caption naming the runs used and
the stand-in when the preset's setting is not the paper's, and the verdict of
`judgements.py` on it where one was judged.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Callable, Sequence

import numpy as np

from experiments.figures import presets
from experiments.figures.runs import RESULTS
from experiments.figures.runs import Request
from experiments.figures.runs import Run
from experiments.figures.runs import Setting
from experiments.figures.runs import read_run
from experiments.figures.runs import run_dir

MAX_PNG_BYTES = 300_000


def save_png(fig, path: str) -> None:
  """Writes `fig` to `path` at the largest of a few resolutions under MAX_PNG_BYTES, then
  closes it (committed figures stay small)."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  data = b''
  for dpi in (110, 80, 60, 45):
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
    data = buf.getvalue()
    if len(data) < MAX_PNG_BYTES:
      break
  plt.close(fig)
  with open(path, 'wb') as f:
    f.write(data)


class MissingRuns(RuntimeError):
  """A renderer found none of the runs it needs (train them first)."""


@dataclasses.dataclass(frozen=True)
class SameRuns:
  """Figure `figure` draws `request` too; `differs` says what this figure shows instead.

  Where a preset has one stand-in for two of the paper's models (or the paper repeats an
  experiment), two figures read the same runs: the second draws another view of them and its
  caption opens with `sentence`, so it is never a copy of the first.
  """

  figure: int
  request: Request
  differs: str

  def sentence(self, ctx: 'Context', request: Request) -> str:
    """'Same runs as Figure N; ...' when `ctx` draws `request` from Figure N's runs, else ''."""
    mine = {w for *_, w in ctx.workdirs(request)}
    if not mine & {w for *_, w in ctx.workdirs(self.request)}:
      return ''
    extra = sorted(set(ctx.temperatures(request)) - set(ctx.temperatures(self.request)))
    plus = ', plus T = ' + ', '.join(f'{t:g}' for t in extra) if extra else ''
    return f'Same runs as Figure {self.figure}{plus}; {self.differs} '


@dataclasses.dataclass(frozen=True)
class Entry:
  """One figure or table of the paper and the runs it is drawn from."""

  key: str  # 'figure_3', 'table_1', 'sweep_cifar10_mlp'
  title: str
  requests: tuple[Request, ...]
  render: Callable[['Context'], None]
  cpu_note: str = ''  # what the CPU preset cannot show, for the caption


@dataclasses.dataclass
class Context:
  """Where runs live and where outputs go, for one preset."""

  preset: str
  outdir: str
  root: str  # run directories
  seeds: int
  entry: Entry | None = None
  records: str | None = None  # compact records (experiments.records), read when a run is absent
  results: str = RESULTS  # where `TrainedBy` settings' results folders live
  quick: bool = False  # synthetic figures at their --quick sizes (tests)

  def setting(self, paper: str) -> Setting:
    return presets.PRESETS[self.preset][paper]

  def seeds_of(self, request: Request) -> int:
    trained = self.setting(request.paper).trained_by
    return trained.seeds if trained else request.seeds or self.seeds

  def temperatures(self, request: Request) -> tuple[float, ...]:
    temps = request.temperatures
    if self.preset == 'cpu' and request.cpu_temperatures is not None:
      temps = request.cpu_temperatures
    trained = self.setting(request.paper).trained_by
    return tuple(t for t in temps if t in trained.temperatures) if trained else temps

  def workdirs(self, request: Request):
    """(temperature, seed, workdir) of every run `request` asks for."""
    for t, s, workdir, _ in self.locations(request):
      yield t, s, workdir

  def locations(self, request: Request):
    """(temperature, seed, workdir, record dir) of every run `request` asks for."""
    setting = self.setting(request.paper)
    trained = setting.trained_by
    for t in self.temperatures(request):
      for s in range(self.seeds_of(request)):
        if trained:
          yield t, s, trained.workdir(self.results, t, s), trained.record(self.results, t, s)
        else:
          workdir = run_dir(self.root, setting, request, t, s)
          yield t, s, workdir, self.record_dir(workdir)

  def record_dir(self, workdir: str) -> str | None:
    """Where the compact record of the run in `workdir` (under `root`) lives."""
    relative = os.path.relpath(workdir, self.root)
    if relative.startswith(os.pardir):  # e.g. a TrainedBy run: its record is in `locations`
      raise ValueError(f'{workdir} is not under {self.root}')
    return os.path.join(self.records, relative) if self.records else None

  def runs(self, request: Request, *, need_analysis: bool | None = None) -> dict[float, list[Run]]:
    """{T: [finished runs]}; raises MissingRuns when none has finished."""
    need = request.analyze if need_analysis is None else need_analysis
    out: dict[float, list[Run]] = {}
    for t, s, workdir, record in self.locations(request):
      run = read_run(workdir, t, s)
      if run is None and record:
        run = read_run(record, t, s)
      if run is not None and (run.analysis is not None or not need):
        out.setdefault(t, []).append(run)
    if not out:
      setting = self.setting(request.paper)
      where = f'train them: {setting.trained_by.command}' if setting.trained_by else self.root
      raise MissingRuns(f'no finished run of {request.paper} ({setting.name}) under {where}')
    return out

  def describe(self, request: Request, runs: dict[float, list[Run]] | None = None) -> str:
    """Caption line: model/data run, T values and seeds found, paper's setting."""
    setting = self.setting(request.paper)
    paper = presets.PAPER_LABELS.get(request.paper, request.paper)
    line = f'- {setting.label or setting.name}'
    if request.variant:
      line += f' [{request.variant}]'
    if runs is not None:
      line += '; T = ' + ', '.join(
        f'{t:g} ({len(r)} seed{"s" * (len(r) > 1)})' for t, r in sorted(runs.items())
      )
    if setting.trained_by:
      line += f' (runs of experiments/results/{setting.trained_by.results})'
    if self.preset == 'paper':
      return line + f" (the paper's setting: {paper})"
    return line + f". CPU stand-in for the paper's {paper}."

  def save_figure(self, fig, what: str, runs_lines: Sequence[str], notes: str = '') -> str:
    """`<key>.png` (< 300 KB) and its `<key>.md` caption."""
    key = self.entry.key
    os.makedirs(self.outdir, exist_ok=True)
    save_png(fig, os.path.join(self.outdir, f'{key}.png'))
    self._caption(f'![{key}]({key}.png)\n\n{what}', runs_lines, notes)
    return os.path.join(self.outdir, f'{key}.png')

  def save_table(
    self,
    header: Sequence[str],
    rows: Sequence[Sequence],
    what: str,
    runs_lines: Sequence[str],
    notes: str = '',
  ) -> None:
    """`<key>.md` (caption + table) and `<key>.csv`."""
    from experiments import markdown_table  # pylint: disable=import-outside-toplevel
    from experiments import save_table  # pylint: disable=import-outside-toplevel

    save_table(self.outdir, self.entry.key, header, rows)
    self._caption(what + '\n\n' + markdown_table(header, rows), runs_lines, notes)

  def save_markdown(self, body: str, runs_lines: Sequence[str], notes: str = '') -> None:
    """`<key>.md` around an already formatted body (e.g. a table)."""
    self._caption(body, runs_lines, notes)

  def _where(self) -> str:
    """Where the caption's runs are read from: run directories, else their compact records.

    Both, since a fresh clone has only the committed records.
    """
    where = f'run directories in `{os.path.relpath(self.root)}`'
    if self.records:
      where += (
        f', or where absent (a fresh clone) their records in `{os.path.relpath(self.records)}`'
      )
    return where + '; a line naming a results folder reads its `runs` and `records`'

  def _caption(self, body: str, runs_lines: Sequence[str], notes: str) -> None:
    from experiments.figures import verdicts  # pylint: disable=import-outside-toplevel

    entry = self.entry
    text = [
      f'# {entry.key.replace("_", " ").capitalize()}: {entry.title}',
      '',
      body,
      '',
      f'Runs (preset `{self.preset}`; {self._where()}):',
      *runs_lines,
    ]
    for note in (
      entry.cpu_note if self.preset == 'cpu' else '',
      notes,
      verdicts.for_caption(self.preset, entry.key, runs_lines),
    ):
      if note:
        text += ['', note]
    text += [
      '',
      f'Regenerate: `python -m experiments.paper --preset={self.preset} --only={entry.key}`',
      '',
    ]
    with open(os.path.join(self.outdir, f'{entry.key}.md'), 'w') as f:
      f.write('\n'.join(text))


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
  """Mean and sample std over seeds, ignoring missing values (NaN when none)."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def pct(x: float | None) -> str:
  return 'n/a' if x is None or np.isnan(x) else f'{100 * x:.0f}%'


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt
