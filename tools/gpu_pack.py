r"""The GPU pack (issue 22 item 3): Table 1's CIFAR-10 rows at the paper's budgets on one GPU.

    python -m tools.gpu_pack --data_dir=DIR --out=OUT [--budget_s=540] [--runs_dir=/tmp/...]
    python -m tools.gpu_pack --tiny --data_dir=DIR --out=OUT      # CPU check, seconds

In order, so that whatever finishes first is already worth having:
  1. the CIFAR-10 MLP row at the paper's width and budget (configs/mlp_c10.py: 7 hidden ReLU
     layers x 2048 + the classifier, SGD lr 0.05, batch 128, all 50,000 training images of
     the JPEG copy with the CIFAR augmentation, 100 epochs), T in {1, 100} x 3 seeds, as one
     population per init (PyTorch, the paper's, then Kaiming): 12 runs;
  2. the analysis of each MLP run (probes, kappa/rho, SR, NECO; OOD probes on MNIST);
  3. ResNet-18 on CIFAR-10 (configs/resnet18_c10.py, 164 epochs, decay at 82/123),
     T in {1, 100}, seed 0, as a population of 2, then its analyses.
Every run trains with the dataset on the device (`input_on_device`, one epoch per dispatch)
in an ordinary run directory under --runs_dir (checkpoints stay there); each finished run's
compact record (`experiments/records.py`: config, train_results, analysis, scalars; no
checkpoints) goes to OUT/records/<run>/ as soon as it exists, each analysed run's line to
OUT/runs.jsonl (the fields of experiments/results/table1_paper_cpu/runs.jsonl, written by
`reproduce_table1.run_record`) with OUT/table1.md and table1.csv, and the timings to
OUT/gpu_pack.json. With --archive=FILE.tar.gz the whole of OUT is also packed into one file
after every stage (the device tool brings back at most 8 files, 2 folders down).

Timing: per population its wall time (set-up, compiles, evaluation and saves included) and,
over its dispatches after the first of each size, img/s and MFU = XLA's FLOPs of one step of
all members (cost analysis of the lowered step) x steps / seconds / PEAK_FLOPS, the H200's
dense bf16 peak, 989 TFLOP/s (NVIDIA's datasheet, without sparsity; the runs compute in
float32 (TF32 on the tensor cores by XLA's default), so this understates their use of it).

Budget: --budget_s (wall seconds from the start) stops the pack cleanly: a population still
training when it runs out gets SIGTERM, saves every member at the step reached and stops
(rerunning the same command with the same --runs_dir resumes it); no analysis starts that
the budget cannot hold (its expected time: the longest one so far, else 60 s). What was
finished is written either way.

Check the machine first (seconds): `python -m tools.gpu_pack --check_env` imports what the
pack needs and names what is missing. The H200 image of this workplace had jax 0.11, flax,
optax, orbax and tensorboard but no tensorflow, tensorflow-datasets, grain, array_record,
ml_collections or clu (its package list, /work/.library/device/KINDS.md): they must travel
as wheels (tensorflow-cpu alone is far over one call's 64 MiB: several calls to a warm
machine), or the data and metric-writer paths must first stop needing TensorFlow.

The GPU machine has no network: bring the data (`--data_dir` must hold cifar10_jpeg and
mnist; `python -m tools.import_data cifar10_jpeg|mnist --data_dir=DIR --source=FOLDER`
builds them from ../shared/data's cifar10_jpeg.zip and mnist_*.npz). The device tool
carries at most 64 MiB per call (the repository included), so data/tfds/cifar10_jpeg
(139 MB) does not travel as it is: see the report of issue 22 for a recipe in two calls.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import tarfile
import threading
import time
from typing import Any

PEAK_FLOPS = 989e12  # H200 dense bf16, the MFU denominator (see the module docstring)
EPOCH_STEPS = 390  # 50,000 // 128: one epoch per dispatch
MIN_TRAIN_S = 30.0  # no population starts with less budget left (its set-up alone)


@dataclasses.dataclass(frozen=True)
class Group:
  """One population of the pack: an experiment of reproduce_table1 at temperatures x seeds."""

  experiment: Any  # table1_presets.Experiment
  temperatures: tuple[float, ...]
  seeds: tuple[int, ...]


def _loop_overrides(tiny: bool) -> tuple[tuple[str, Any], ...]:
  """Data on the device, one dispatch per epoch, evaluation and a checkpoint at the end only
  (a stop saves too), no collapse monitor: the host does nothing during an epoch."""
  every = 4 if tiny else EPOCH_STEPS
  return (
    ('dataset', 'cifar10_jpeg'),
    ('ood_dataset', 'mnist'),
    ('input_on_device', True),
    ('steps_per_dispatch', every),
    ('log_every_steps', every),
    ('eval_every_steps', 10**9),
    ('checkpoint_every_steps', 10**9),
    ('keep_checkpoints', 1),
    ('metrics_every_steps', 0),
  )


def _tiny_overrides() -> tuple[tuple[str, Any], ...]:
  return (
    ('train_subset', 256),
    ('batch_size', 64),
    ('eval_batch_size', 250),
    ('num_train_steps', 8),
    ('model.width', 32),
    ('model.depth', 2),
  )


def groups(args) -> list[Group]:
  """The pack's populations, in the order they run."""
  from experiments import table1_presets  # pylint: disable=import-outside-toplevel

  analysis = _analysis(args)
  common = _loop_overrides(args.tiny) + (_tiny_overrides() if args.tiny else ())
  seeds = tuple(range(args.seeds))
  out = []
  width, depth = (32, 2) if args.tiny else (2048, 7)
  for init in args.inits:
    exp = table1_presets.Experiment(
      f'mlp_c10_{init}',
      'mlp_c10',
      common + (('model.init', init), ('train_subset', 256 if args.tiny else 0)),
      paper='CIFAR-10 / MLP',
      analysis=analysis,
      label=f'CIFAR-10 (JPEG, 50k train) / MLP {depth}+1 x {width}, {init} init, GPU',
    )
    out.append(Group(exp, (1.0, 100.0), seeds))
  if args.resnet:
    resnet = common + (('ood_detection_dataset', ''), ('model.dtype', args.resnet_dtype))
    if args.tiny:
      resnet += (('model.name', 'resnet20'), ('batch_size', 32), ('num_train_steps', 2))
    exp = table1_presets.Experiment(
      'resnet18_c10',
      'resnet18_c10',
      resnet,
      paper='CIFAR-10 / ResNet18',
      analysis=analysis,
      label=f'CIFAR-10 (JPEG, 50k train) / ResNet-18, 164 epochs, {args.resnet_dtype}, GPU',
    )
    out.append(Group(exp, (1.0, 100.0), (0,)))
  return out


def _analysis(args):
  from rankdeficit.analysis.config import AnalysisConfig  # pylint: disable=import-outside-toplevel

  overrides = {'plots': False}
  if args.tiny:
    overrides.update(max_examples=200, probe_epochs=2, max_dims=64, probe_batch_size=256)
  overrides.update(json.loads(args.analysis))
  return AnalysisConfig.from_overrides(overrides)


def _points(group: Group, args) -> list:
  from experiments import reproduce_table1  # pylint: disable=import-outside-toplevel

  return [
    reproduce_table1.point(group.experiment, t, s, outdir=args.runs_dir, data_dir=args.data_dir)
    for s in group.seeds
    for t in group.temperatures
  ]


class Pack:
  """The pack's state: its deadline, what it wrote, and the summary it keeps in OUT."""

  def __init__(self, args):
    self.args, self.started = args, time.time()
    self.deadline = self.started + args.budget_s
    self.summary: dict[str, Any] = {
      'peak_flops': PEAK_FLOPS,
      'peak': 'H200 dense bf16, 989 TFLOP/s',
      'budget_s': args.budget_s,
      'populations': [],
      'analyses': [],
      'stopped': None,
    }
    self.analysis_seconds: list[float] = []
    os.makedirs(args.out, exist_ok=True)

  def left(self) -> float:
    return self.deadline - time.time()

  def save(self) -> None:
    """OUT/gpu_pack.json, then the archive of OUT (when asked for)."""
    import jax  # pylint: disable=import-outside-toplevel

    self.summary.update(
      elapsed_s=time.time() - self.started,
      devices=[str(d) for d in jax.devices()],
      jax=jax.__version__,
    )
    _write_json(os.path.join(self.args.out, 'gpu_pack.json'), self.summary)
    if self.args.archive:
      tmp = f'{self.args.archive}.tmp{os.getpid()}'
      with tarfile.open(tmp, 'w:gz') as tar:
        tar.add(self.args.out, arcname=os.path.basename(os.path.normpath(self.args.out)))
      os.replace(tmp, self.args.archive)


def _write_json(path: str, value) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


@contextlib.contextmanager
def _sigterm_at(deadline: float):
  """SIGTERM to this process at `deadline` (the population's StopRequest turns it into a
  save and `preemption.Stopped`); nothing once the block is left."""
  timer = threading.Timer(max(deadline - time.time(), 0.0), os.kill, (os.getpid(), signal.SIGTERM))
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


def population_line(name: str, result, points) -> dict[str, Any]:
  """The timing record of one population (and the line printed for it)."""
  from rankdeficit import experiment  # pylint: disable=import-outside-toplevel

  batch = experiment.build_config(points[0]).batch_size
  rec = {
    'population': name,
    'members': len(points),
    'steps': result.steps_trained,
    'wall_s': result.train_seconds,
    'dispatch_s': result.dispatch_seconds,
    'steps_timed': result.steps_timed,
    'flops_per_step': result.flops_per_step,
  }
  if result.steps_timed and result.dispatch_seconds > 0:
    per_s = result.steps_timed / result.dispatch_seconds
    rec['img_per_s_per_member'] = per_s * batch
    if result.flops_per_step:
      rec['tflops'] = result.flops_per_step * per_s / 1e12
      rec['mfu'] = result.flops_per_step * per_s / PEAK_FLOPS
  mfu = f'MFU {100 * rec["mfu"]:.1f}% of 989 TFLOP/s' if 'mfu' in rec else 'MFU: no FLOP count'
  print(
    f'{name}: {len(points)} members x {result.steps_trained} steps, wall {result.train_seconds:.1f}'
    f' s (dispatches {result.dispatch_seconds:.1f} s for {result.steps_timed} steps), '
    f'{rec.get("img_per_s_per_member", 0):,.0f} img/s per member, {mfu}',
    flush=True,
  )
  return rec


def train(pack: Pack, group: Group) -> bool:
  """Trains the group's unfinished runs as one population; False when the budget stopped
  it. Each finished run's (train-only) record is written at once."""
  from experiments import records  # pylint: disable=import-outside-toplevel
  from experiments import reproduce_table1  # pylint: disable=import-outside-toplevel
  from rankdeficit import experiment  # pylint: disable=import-outside-toplevel
  from rankdeficit import population_runs  # pylint: disable=import-outside-toplevel
  from rankdeficit.run import preemption  # pylint: disable=import-outside-toplevel

  points = _points(group, pack.args)
  todo = [p for p in points if not experiment.is_done(p.workdir)]
  if todo:
    try:
      with _sigterm_at(pack.deadline):
        result = population_runs.train_group(todo)
    except preemption.Stopped as e:
      pack.summary['stopped'] = f'{group.experiment.name}: {e}'
      return False
    pack.summary['populations'].append(population_line(group.experiment.name, result, todo))
  for point, (temperature, seed) in zip(points, _settings(group)):
    if experiment.is_done(point.workdir):
      name = reproduce_table1.run_name(group.experiment, temperature, seed)
      records.write_record(point.workdir, os.path.join(pack.args.out, 'records', name))
  pack.save()
  return True


def _settings(group: Group) -> list[tuple[float, int]]:
  return [(t, s) for s in group.seeds for t in group.temperatures]


def analyse(pack: Pack, group: Group, made: dict) -> None:
  """Analyses the group's trained runs one by one (while the budget holds), each record
  and runs.jsonl line written as it finishes."""
  from experiments import records  # pylint: disable=import-outside-toplevel
  from experiments import reproduce_table1  # pylint: disable=import-outside-toplevel
  from rankdeficit import experiment  # pylint: disable=import-outside-toplevel

  exp = group.experiment
  for point, (temperature, seed) in zip(_points(group, pack.args), _settings(group)):
    expected = max(pack.analysis_seconds, default=60.0)
    if pack.left() < expected:
      pack.summary['stopped'] = f'budget: {pack.left():.0f} s left, analyses take ~{expected:.0f} s'
      return
    name = reproduce_table1.run_name(exp, temperature, seed)
    start = time.time()
    finished = experiment.run_point(
      point,
      stage='analyze',
      on_finished=lambda f, name=name: records.write_record(
        f.workdir, os.path.join(pack.args.out, 'records', name)
      ),
    )
    if finished is None:
      continue  # not trained (the budget stopped its population)
    seconds = time.time() - start
    pack.analysis_seconds.append(seconds)
    pack.summary['analyses'].append({'run': name, 'seconds': seconds})
    made[(exp.name, float(temperature), int(seed))] = reproduce_table1.run_record(
      exp, temperature, seed, finished
    )
    _write_tables(pack, made)


def _write_tables(pack: Pack, made: dict) -> None:
  """runs.jsonl (the runs of an earlier pack in OUT kept), table1.md/.csv, gpu_pack.json."""
  from experiments import records  # pylint: disable=import-outside-toplevel
  from experiments import table1  # pylint: disable=import-outside-toplevel

  merged = {**records.read_runs(pack.args.out), **made}
  rows = [merged[k] for k in sorted(merged, key=lambda k: (k[0], k[2], k[1]))]
  table1.write_runs(rows, pack.args.out)
  table1.write_tables(table1.aggregate(rows), pack.args.out, 'paper_gpu')
  pack.save()


def run(args) -> dict:
  """The whole pack (see the module docstring); returns its summary."""
  from rankdeficit.run import preemption  # pylint: disable=import-outside-toplevel

  pack, made = Pack(args), {}
  mlp = [g for g in groups(args) if g.experiment.name.startswith('mlp')]
  resnet = [g for g in groups(args) if not g.experiment.name.startswith('mlp')]
  # A SIGTERM outside a population (the budget's timer racing its end, or the machine's)
  # ends the pack after the current stage instead of killing it.
  with preemption.StopRequest() as stop:
    for stage in (mlp, resnet):
      trained = []
      for group in stage:
        if pack.left() < MIN_TRAIN_S or stop.requested or not train(pack, group):
          break
        trained.append(group)
      for group in trained:
        analyse(pack, group, made)
      if len(trained) < len(stage):
        pack.summary['stopped'] = pack.summary['stopped'] or 'budget or signal'
        break  # what is finished is written
  pack.save()
  return pack.summary


# What the pack imports on the GPU machine (module -> distribution). The image of this
# workplace's H200 lacked the starred ones when this was written (see the module docstring).
REQUIRED_MODULES = (
  ('jax', 'jax'),
  ('flax', 'flax'),
  ('optax', 'optax'),
  ('orbax.checkpoint', 'orbax-checkpoint'),
  ('ml_collections', 'ml_collections *'),
  ('grain', 'grain *'),
  ('array_record', 'array_record *'),
  ('tensorflow_datasets', 'tensorflow-datasets *'),
  ('tensorflow', 'tensorflow-cpu *'),
  ('clu.metric_writers', 'clu *'),
  ('tensorboard', 'tensorboard'),
  ('sklearn', 'scikit-learn'),
  ('matplotlib', 'matplotlib'),
  ('PIL', 'pillow'),
)


def check_env() -> list[str]:
  """The REQUIRED_MODULES that do not import here (printed with the devices found)."""
  import importlib  # pylint: disable=import-outside-toplevel

  missing = []
  for module, dist in REQUIRED_MODULES:
    try:
      importlib.import_module(module)
    except Exception as e:  # pylint: disable=broad-except  (ImportError, or a broken install)
      missing.append(dist.rstrip(' *'))
      print(f'missing: {module} ({dist.rstrip(" *")}): {type(e).__name__}: {e}'[:300])
  if 'jax' not in missing:
    import jax  # pylint: disable=import-outside-toplevel

    print(f'jax {jax.__version__}, devices: {jax.devices()}')
  print('environment ok' if not missing else f'missing: {", ".join(missing)}', flush=True)
  return missing


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--data_dir', help='tfds data_dir with cifar10_jpeg and mnist (required)')
  parser.add_argument('--out', help='records, runs.jsonl, tables, gpu_pack.json (required)')
  parser.add_argument('--runs_dir', default='/tmp/gpu_pack_runs', help='run dirs (checkpoints)')
  parser.add_argument('--archive', default='', help='also pack OUT into this .tar.gz')
  parser.add_argument('--budget_s', type=float, default=540.0, help='wall seconds in all')
  parser.add_argument('--seeds', type=int, default=3, help='MLP seeds (ResNet-18: seed 0)')
  parser.add_argument('--inits', default='pytorch,kaiming', type=lambda s: s.split(','))
  parser.add_argument('--no_resnet', dest='resnet', action='store_false')
  parser.add_argument('--resnet_dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--analysis', default='{}', help='JSON AnalysisConfig overrides')
  parser.add_argument('--tiny', action='store_true', help='tiny sizes, for a CPU check')
  parser.add_argument('--check_env', action='store_true', help='only check the imports, exit')
  return parser


def main(argv=None) -> None:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.check_env:
    raise SystemExit(1 if check_env() else 0)
  if not args.data_dir or not args.out:
    parser.error('--data_dir and --out are required')
  summary = run(args)
  print(json.dumps({k: summary[k] for k in ('populations', 'analyses', 'stopped')}, indent=1))


if __name__ == '__main__':
  main()
