"""docs/metrics.md: documents every public metric, and its worked example runs."""

import inspect
import os
import pathlib
import re
import subprocess
import sys

from rankdeficit import metrics

DOC = pathlib.Path(__file__).resolve().parents[2] / 'docs' / 'metrics.md'


def _example_code() -> str:
  text = DOC.read_text()
  section = text[text.index('## Worked example') :]
  return re.search(r'```python\n(.*?)```', section, re.DOTALL).group(1)


def test_every_public_name_is_documented():
  text = DOC.read_text()
  public = [
    name
    for name, obj in vars(metrics).items()
    if not name.startswith('_') and (inspect.isfunction(obj) or inspect.isclass(obj))
  ]
  missing = [name for name in public if f'`{name}' not in text]
  assert len(public) > 30 and not missing


def test_worked_example_runs_on_a_sharded_mesh(tmp_path):
  script = tmp_path / 'example.py'
  script.write_text(_example_code())
  repo = pathlib.Path(__file__).resolve().parents[2]
  env = {
    **os.environ,
    'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
    'JAX_PLATFORMS': 'cpu',
    'PYTHONPATH': str(repo),
  }
  result = subprocess.run(
    [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=repo
  )
  assert result.returncode == 0, result.stderr[-3000:]
  last = result.stdout.strip().splitlines()[-1]
  values = dict(re.findall(r'(NC1|rank|AUROC) ([-\d.]+)', last))
  nc1, rank, auroc = (float(values[k]) for k in ('NC1', 'rank', 'AUROC'))
  assert 0 <= nc1 < 1 and 1 <= rank <= 32 and auroc > 0.9, last
