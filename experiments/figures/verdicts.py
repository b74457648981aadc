"""How the judged verdicts (experiments/figures/judgements.py) reach captions and VERDICTS.md.

A caption gets its entry's verdict and evidence (`for_caption`). Each verdict records the
digest of the caption's run lines it was judged on (`runs_digest`), so a render from other
runs still writes the verdict but marks it as judged on other runs. `python -m
experiments.figures.verdicts DIR` prints each rendered entry's digest and whether its verdict
is stale; `write_index` lists every verdict of a rendered directory in VERDICTS.md.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Sequence

from experiments.figures.judgements import THEORY
from experiments.figures.judgements import WORDS
from experiments.figures.judgements import Verdict
from experiments.figures.judgements import lookup

SOURCE = 'experiments/figures/judgements.py'


def runs_digest(lines: Sequence[str]) -> str:
  """A short digest of a caption's run lines (`- <setting>; T = ...` lines)."""
  return hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:12] if lines else ''


def runs_lines_of(markdown_text: str) -> list[str]:
  """The run lines of a rendered caption (the `- ...` lines after `Runs (preset ...`)."""
  lines = markdown_text.split('\n')
  for i, line in enumerate(lines):
    if line.startswith('Runs (preset '):
      out = []
      for item in lines[i + 1 :]:
        if not item.startswith('- '):
          break
        out.append(item)
      return out
  return []


def markdown(verdict: Verdict, runs_lines: Sequence[str]) -> str:
  """The caption paragraph: `Verdict: <word>`, then the evidence.

  When `runs_lines` are not the ones the verdict was judged on, the verdict line says so.
  """
  line = f'Verdict: {verdict.verdict}'
  if runs_digest(runs_lines) != verdict.runs:
    line += f' (judged on other runs than those above: revisit `{SOURCE}`)'
  return (
    f'{line}\n\nEvidence (judged by hand on the runs and numbers above; kept in '
    f'`{SOURCE}`, to revisit when they change): {verdict.evidence}'
  )


def for_caption(preset: str, key: str, runs_lines: Sequence[str]) -> str:
  """`markdown` of `key`'s verdict on `preset`, or '' when it has none."""
  verdict = lookup(preset, key)
  return markdown(verdict, runs_lines) if verdict else ''


def append_theory(outdir: str, name: str, judged_sizes: bool) -> None:
  """Appends THEORY[name]'s verdict to `<outdir>/<name>.md` (written by `save_table`).

  `judged_sizes`: the script ran at the sizes the verdict was judged on (not --quick, default
  sizes and seed); otherwise the verdict line says it was judged on other output.
  """
  text = markdown(THEORY[name], [] if judged_sizes else ['other sizes'])
  with open(os.path.join(outdir, f'{name}.md'), 'a') as f:
    f.write(f'\n{text}\n')


INDEX = 'VERDICTS.md'


def _entry_order(key: str) -> tuple:
  kind, _, rest = key.partition('_')
  number = int(rest) if rest.isdigit() else 0
  return ({'figure': 0, 'table': 1}.get(kind, 2), number, key)


def index_markdown(outdir: str) -> str:
  """The verdicts of every rendered caption (`<key>.md` with a `Verdict:` line) in `outdir`:
  counts per verdict, then one row per entry (title, verdict, stale mark) linking to it."""
  rows, counts = [], dict.fromkeys(WORDS, 0)
  for name in sorted(os.listdir(outdir), key=lambda n: _entry_order(n[:-3])):
    if not name.endswith('.md') or name == INDEX:
      continue
    with open(os.path.join(outdir, name)) as f:
      lines = f.read().split('\n')
    found = [l[len('Verdict: ') :] for l in lines if l.startswith('Verdict: ')]
    if not found:
      continue
    word = next(w for w in sorted(WORDS, key=len, reverse=True) if found[0].startswith(w))
    counts[word] += 1
    title = lines[0].lstrip('# ').strip()
    stale = ' (judged on other runs)' if found[0] != word else ''
    rows.append(f'| [{name[:-3]}]({name}) | {title} | {word}{stale} |')
  summary = ', '.join(f'{word}: {n}' for word, n in counts.items())
  return (
    f'# Verdicts ({len(rows)} figures and tables)\n\n{summary}.\n\n'
    f'Each verdict and its evidence is in the linked caption (from `{SOURCE}`).\n\n'
    '| entry | what it shows | verdict |\n|---|---|---|\n' + '\n'.join(rows) + '\n'
  )


def write_index(outdir: str) -> str:
  """Writes `index_markdown(outdir)` to `<outdir>/VERDICTS.md`; returns its path."""
  path = os.path.join(outdir, INDEX)
  with open(path, 'w') as f:
    f.write(index_markdown(outdir))
  return path


def main(argv: Sequence[str]) -> None:
  """Prints `key digest verdict [stale]` for every `<key>.md` in the directory argv[0]."""
  outdir = argv[0] if argv else os.path.join('experiments', 'results', 'paper_cpu')
  for name in sorted(os.listdir(outdir)):
    if not name.endswith('.md') or name == INDEX:
      continue
    key = name[:-3]
    with open(os.path.join(outdir, name)) as f:
      digest = runs_digest(runs_lines_of(f.read()))
    verdict = lookup('cpu', key)
    stale = verdict is not None and verdict.runs != digest
    print(key, digest or '-', verdict.verdict if verdict else '(none)', 'stale' if stale else '')


if __name__ == '__main__':
  main(sys.argv[1:])
