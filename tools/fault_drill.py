r"""Fault drill: provokes each fault a cluster or a user produces and checks the outcome.

  python -m tools.fault_drill [--workdir=/tmp/fault_drill] [--keep] [--only=sweep,disk]

Runs `python -m rankdeficit.main` on configs/quickstart.py (a small MLP on the digits
bundled with scikit-learn: no data, no network) and prints a table
`case | expected | observed | ok`, ending with `N/M faults handled`. Exit status 0 only if
all are. The same cases are unit-tested in tests/test_faults.py. Takes a few minutes on 2
CPU cores (every case is a fresh process that imports JAX).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
ENV = {
  **os.environ,
  'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
  'PYTHONPATH': str(REPO),
}
BAD_INPUTS = [  # (override, what the one-line error must name)
  ('--config.temperature=inf', 'config.temperature'),
  ('--config.learning_rate=nan', 'config.learning_rate'),
  ('--config.num_epochs=-1', 'config.num_epochs'),
  ('--config.keep_checkpoints=0', 'config.keep_checkpoints'),
  ('--config.checkpoint_every_steps=0', 'config.checkpoint_every_steps'),
  ('--config.log_every_steps=0', 'config.log_every_steps'),
  ('--config.model.width=0', 'config.model.width'),
  ('--config.image_size=0', 'config.image_size'),
  ('--config.train_subset=-1', 'config.train_subset'),
  ('--config.batch_size=4096', 'config.batch_size'),
  ('--config.no_such_field=1', 'unknown config field'),
  ('--config=configs/no_such_config.py', 'cannot load --config'),
  (
    '--config.dataset=cifar100 --config.download=False --config.data_dir={empty}',
    'tools.import_data cifar100',
  ),
  ('--config.temperature_schedule=cosine', 'config.final_temperature'),
  ('--config.seed=-1', 'config.seed'),
  ('--config.seed=4294967296', 'config.seed'),
  ('--workdir=', "--workdir=''"),
]
# A run whose checkpoint saves hit a full disk from step 8 on, when no tmpfs can be mounted.
_FULL_DISK_FROM_STEP_8 = """
import errno, sys
import orbax.checkpoint as ocp
save = ocp.CheckpointManager.save
def full(self, step, *args, **kwargs):
  if step >= 8:
    raise OSError(errno.ENOSPC, 'No space left on device')
  return save(self, step, *args, **kwargs)
ocp.CheckpointManager.save = full
from absl import app
from rankdeficit import main
app.run(main.main, flags_parser=main.parse_flags)
"""


def command(workdir, steps: int, *extra: str) -> list[str]:
  return [
    sys.executable,
    '-m',
    'rankdeficit.main',
    '--config=configs/quickstart.py',
    f'--workdir={workdir}',
    '--config.model.width=32',
    '--config.model.depth=2',
    f'--config.num_train_steps={steps}',
    '--config.log_every_steps=1',
    '--config.eval_every_steps=1000',
    '--config.checkpoint_every_steps=4',
    *extra,
  ]


def run(cmd, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def steps_on_disk(workdir: Path) -> list[int]:
  directory = workdir / 'checkpoints'
  return (
    sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    if directory.exists()
    else []
  )


def descendants(pid: int) -> set[int]:
  """Child processes of `pid`, of any of its threads (grain spawns workers from a thread)."""
  found = set()
  for task in Path(f'/proc/{pid}/task').glob('*'):
    try:
      found |= {int(p) for p in (task / 'children').read_text().split()}
    except OSError:
      pass
  return found


def alive(pid: int) -> bool:
  """Whether `pid` exists and is not a zombie."""
  try:
    return Path(f'/proc/{pid}/stat').read_text().split(') ')[1][0] != 'Z'
  except OSError:
    return False


def sigterm_case(root: Path, workers: int) -> tuple[str, bool]:
  """SIGTERM to the process group after step 3; then the same command again."""
  workdir, log = root / f'sigterm_w{workers}', root / f'sigterm_w{workers}.log'
  cmd = command(workdir, 200, f'--config.num_workers={workers}')
  with open(log, 'w') as f:
    proc = subprocess.Popen(
      cmd, env=ENV, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
    )
  children: set[int] = set()
  deadline = time.time() + 240
  while proc.poll() is None and time.time() < deadline and '[3] train/' not in log.read_text():
    children |= descendants(proc.pid)
    time.sleep(0.2)
  children |= descendants(proc.pid)
  os.killpg(proc.pid, signal.SIGTERM)
  try:
    proc.wait(timeout=120)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    return 'hung after SIGTERM', False
  text = log.read_text()
  line = next((l for l in text.splitlines() if 'Stopped at step' in l), '')
  step = int(line.split('Stopped at step ')[1].split(':')[0]) if line else -1
  time.sleep(1)
  orphans = [c for c in children if alive(c)]
  saved = step in steps_on_disk(workdir)
  resumed = run(cmd)  # the same command: resumes and finishes
  ok = (
    proc.returncode == 143
    and saved
    and not orphans
    and f'Resumed from checkpoint at step {step}.' in resumed.stderr
    and resumed.returncode == 0
  )
  return (
    f'exit {proc.returncode}, saved step {step}, {len(orphans)} orphans of '
    f'{len(children)} children, resumed: {resumed.returncode == 0}'
  ), ok


def corrupt_case(root: Path) -> tuple[str, bool]:
  workdir = root / 'corrupt'
  first = run(command(workdir, 8))
  latest = workdir / 'checkpoints' / '8'
  victim = max(
    (p for p in latest.rglob('*') if p.is_file() and 'sha256' not in p.name),
    key=lambda p: p.stat().st_size,
  )
  data = bytearray(victim.read_bytes())
  for i in range(len(data) // 2, min(len(data), len(data) // 2 + 64)):
    data[i] ^= 0xFF
  victim.write_bytes(bytes(data))
  again = run(command(workdir, 10))
  warned = any('corrupt' in l and 'step 8' in l for l in again.stderr.splitlines())
  ok = (
    first.returncode == 0
    and again.returncode == 0
    and warned
    and (workdir / 'checkpoints' / 'corrupt' / '8').is_dir()
    and 'Resumed from checkpoint at step 4.' in again.stderr
  )
  return f'warned corrupt: {warned}, moved aside, resumed from 4, exit {again.returncode}', ok


def lock_case(root: Path) -> tuple[str, bool]:
  workdir = root / 'locked'
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  try:
    (workdir / 'lock').write_text(
      json.dumps(
        {
          'host': os.uname().nodename,
          'pid': holder.pid,
          'started': time.time(),
          'heartbeat': time.time(),
        }
      )
    )
    out = run(command(workdir, 4))
  finally:
    holder.kill()
    holder.wait()
  msg = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''
  ok = (
    out.returncode != 0
    and 'locked' in msg
    and f'pid {holder.pid}' in msg
    and sorted(p.name for p in workdir.iterdir()) == ['lock']
  )
  return f'exit {out.returncode}: {msg[:70]}', ok


def changed_config_case(root: Path) -> tuple[str, bool]:
  workdir = root / 'changed'
  run(command(workdir, 4))
  saved = (workdir / 'config.json').read_text()
  out = run(command(workdir, 4, '--config.temperature=100'))
  msg = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''
  ok = (
    out.returncode != 0
    and 'temperature (1.0 -> 100.0)' in msg
    and (workdir / 'config.json').read_text() == saved
  )
  return f'exit {out.returncode}, config.json kept: {ok}', ok


def bad_input_case(root: Path, override: str, must_name: str) -> tuple[str, bool]:
  workdir = root / 'bad_input'
  extra = override.format(empty=root / 'empty_data').split()
  cmd = command(workdir, 4, *extra)
  out = run(cmd, timeout=120)
  lines = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  ok = (
    out.returncode != 0
    and len(lines) == 1
    and must_name in lines[0]
    and 'Traceback' not in out.stderr
    and not workdir.exists()
  )
  return (lines[0][:70] if lines else out.stderr.strip().splitlines()[-1][:70]), ok


def last_line(out: subprocess.CompletedProcess) -> str:
  return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''


def snapshot(directory: Path) -> dict:
  return {
    str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
    for p in sorted(directory.rglob('*'))
  }


def deleted_config_case(root: Path) -> tuple[str, bool]:
  """config.json deleted, then a different T and width: refused from the checkpoint's own
  copy; the same command resumes and config.json comes back."""
  workdir = root / 'deleted_config'
  run(command(workdir, 4))
  (workdir / 'config.json').unlink()
  before = snapshot(workdir)
  changed = [
    run(command(workdir, 8, extra))
    for extra in ('--config.temperature=100', '--config.model.width=64')
  ]
  refused = (
    all(out.returncode != 0 for out in changed)
    and 'temperature (1.0 -> 100.0)' in last_line(changed[0])
    and 'model.width (32 -> 64)' in last_line(changed[1])
    and snapshot(workdir) == before
  )
  same = run(command(workdir, 8))
  restored = (workdir / 'config.json').exists() and same.returncode == 0
  return (
    f'changed T/width refused, untouched: {refused}; same command resumed, '
    f'config.json restored: {restored}'
  ), refused and restored


def null_config_case(root: Path) -> tuple[str, bool]:
  """config.json holding `null` (was an AttributeError): restored from the checkpoint."""
  workdir = root / 'null_config'
  run(command(workdir, 4))
  (workdir / 'config.json').write_text('null')
  out = run(command(workdir, 8))
  saved = (workdir / 'config.json').read_text()
  ok = out.returncode == 0 and saved.startswith('{') and 'Traceback' not in out.stderr
  return f'exit {out.returncode}, config.json restored: {saved.startswith("{")}', ok


def sweep_case(root: Path, dry_run: bool) -> tuple[str, bool]:
  """A sweep point with an unknown field: one line naming it, nothing submitted."""
  sweep_file = root / 'bad_sweep.py'
  sweep_file.write_text(
    "def get_sweep():\n  return {'config': 'configs/quickstart.py', "
    "'points': [{'temperature': 1.0}, {'model.widht': 64}]}\n"
  )
  runs = root / 'bad_sweep_runs'
  out = run(
    [
      sys.executable,
      '-m',
      'rankdeficit.sweep',
      f'--sweep={sweep_file}',
      '--executor=local',
      f'--root={runs}',
    ]
    + (['--dry_run'] if dry_run else [])
  )
  msg = last_line(out)
  ok = (
    out.returncode != 0
    and msg.startswith('error: sweep bad_sweep, point ')
    and "'model.widht'" in msg
    and 'Traceback' not in out.stderr
    and 'submitted' not in out.stdout
    and not runs.exists()
  )
  return f'exit {out.returncode}: {msg[:70]}', ok


def _mount_tmpfs(path: Path, size: str) -> bool:
  if os.geteuid() != 0 or shutil.which('mount') is None:
    return False
  path.mkdir(parents=True, exist_ok=True)
  return (
    subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
      capture_output=True,
      check=False,
    ).returncode
    == 0
  )


def full_disk_case(root: Path) -> tuple[str, bool]:
  """The disk fills up during a save: a 3 MB tmpfs where one can be mounted (root), else
  saves that fail with ENOSPC from step 8. One last line, exit 1, last good step intact."""
  from rankdeficit.run import integrity  # pylint: disable=import-outside-toplevel

  disk = root / 'small_disk'
  real = _mount_tmpfs(disk, '3m')
  workdir = disk / 'run'
  try:
    if real:  # the quickstart's MLP: ~2 MB a checkpoint, so the second one does not fit
      out = run(
        [
          sys.executable,
          '-m',
          'rankdeficit.main',
          '--config=configs/quickstart.py',
          f'--workdir={workdir}',
          '--config.checkpoint_every_steps=10',
          '--config.num_train_steps=60',
          '--config.log_every_steps=10',
        ]
      )
    else:
      out = run([sys.executable, '-c', _FULL_DISK_FROM_STEP_8] + command(workdir, 12)[3:])
    msg, steps = last_line(out), steps_on_disk(workdir)
    intact = bool(steps) and integrity.verify(str(workdir / 'checkpoints' / str(steps[-1]))) is None
    ok = (
      out.returncode == 1
      and msg.startswith('error: no space left on ')
      and f'the last good checkpoint is step {steps[-1] if steps else "?"}' in msg
      and out.stderr.count('Traceback') == 0
      and intact
    )
    kind = 'tmpfs 3 MB' if real else 'injected ENOSPC'
    return f'{kind}: exit {out.returncode}, {msg[7:80]}', ok
  finally:
    if real:
      subprocess.run(['umount', str(disk)], capture_output=True, check=False)


def cases(root: Path):
  yield 'SIGTERM mid-run', 'exit 143, ckpt at reached step, resumes', lambda: sigterm_case(root, 0)
  yield 'SIGTERM with grain workers', 'same, no orphaned workers', lambda: sigterm_case(root, 1)
  yield (
    'corrupt latest checkpoint',
    "warn 'corrupt', move aside, fall back",
    lambda: corrupt_case(root),
  )
  yield (
    'second process, locked workdir',
    "exit!=0 'locked' + holder, no writes",
    lambda: lock_case(root),
  )
  yield (
    'rerun with changed config',
    'refused naming field, config kept',
    lambda: changed_config_case(root),
  )
  yield (
    'config.json deleted, T/width changed',
    'refused from the checkpoint; resumes',
    (lambda: deleted_config_case(root)),
  )
  yield (
    'config.json holds null',
    'restored from the checkpoint, resumes',
    lambda: null_config_case(root),
  )
  yield (
    'sweep point with unknown field',
    '1-line error naming point+field, no jobs',
    (lambda: sweep_case(root, dry_run=False)),
  )
  yield 'same sweep, --dry_run', 'the same refusal', lambda: sweep_case(root, dry_run=True)
  yield (
    'disk full while saving',
    "last line 'no space left on ...', exit 1",
    lambda: full_disk_case(root),
  )
  for override, must_name in BAD_INPUTS:
    yield (
      f'bad input {override.split()[0][2:]}',
      f'1-line error naming {must_name}',
      lambda o=override, m=must_name: bad_input_case(root, o, m),
    )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--workdir', default=None, help='scratch folder (default: a temp dir)')
  parser.add_argument('--keep', action='store_true', help='keep the scratch folder')
  parser.add_argument(
    '--only', default='', help='comma-separated parts of case names: run only those cases'
  )
  args = parser.parse_args(argv)
  root = Path(args.workdir or tempfile.mkdtemp(prefix='fault_drill_'))
  root.mkdir(parents=True, exist_ok=True)
  rows = []
  print('| case | expected | observed | ok |\n|---|---|---|---|', flush=True)
  for name, expected, check in cases(root):
    if args.only and not any(part in name for part in args.only.split(',')):
      continue
    try:
      observed, ok = check()
    except Exception as e:  # pylint: disable=broad-except  (a drill reports, never crashes)
      observed, ok = f'{type(e).__name__}: {e}'[:70], False
    rows.append(ok)
    print(f'| {name} | {expected} | {observed} | {"yes" if ok else "NO"} |', flush=True)
  print(f'{sum(rows)}/{len(rows)} faults handled')
  if not args.keep and not args.workdir:
    shutil.rmtree(root, ignore_errors=True)
  return 0 if all(rows) else 1


if __name__ == '__main__':
  sys.exit(main())
