"""The wheel: core = metrics on jax + numpy, only `rankdeficit` installed, no `configs` clash.

Builds the wheel from the project files offline (`pip wheel --no-build-isolation`), then
installs it NON-editable into fresh venvs:

* core: the venv holds the wheel plus exactly the distributions its core requirements
  pull in (jax, numpy and their own dependencies, linked from this environment), so an
  import of flax/TensorFlow/... by `rankdeficit.metrics` fails there, and the test also
  checks `sys.modules`. Prints the core install size.
* train: the wheel plus this environment's packages on the path (no editable finder), run
  from a directory with its own `configs` package: `load_run` must still work.

Skipped, with the reason, only when pip, venv or setuptools is unavailable (the `[test]`
extra installs setuptools and wheel).
"""

import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

from packaging.requirements import Requirement
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAINING_STACK = (
  'flax',
  'tensorflow',
  'tensorflow_datasets',
  'grain',
  'clu',
  'orbax',
  'optax',
  'ml_collections',
)


def _run(cmd, **kwargs) -> str:
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
  assert result.returncode == 0, f'{cmd} failed:\n{result.stdout}\n{result.stderr}'
  return result.stdout


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> pathlib.Path:
  for module in ('pip', 'venv', 'setuptools'):
    if importlib.util.find_spec(module) is None:
      pytest.skip(f'{module} is not available in this interpreter')
  src = tmp_path_factory.mktemp('src')
  shutil.copy(REPO / 'pyproject.toml', src)
  shutil.copy(REPO / 'README.md', src)
  shutil.copytree(
    REPO / 'rankdeficit', src / 'rankdeficit', ignore=shutil.ignore_patterns('__pycache__')
  )
  out = tmp_path_factory.mktemp('dist')
  _run(
    [
      sys.executable,
      '-m',
      'pip',
      'wheel',
      '--no-deps',
      '--no-build-isolation',
      '--no-index',
      '-q',
      '-w',
      str(out),
      str(src),
    ]
  )
  return next(out.glob('rankdeficit-*.whl'))


def _metadata(wheel_path: pathlib.Path) -> list[Requirement]:
  with zipfile.ZipFile(wheel_path) as zf:
    meta = next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))
    lines = zf.read(meta).decode().splitlines()
  return [Requirement(line.split(':', 1)[1]) for line in lines if line.startswith('Requires-Dist:')]


def _core(requirements: list[Requirement]) -> list[Requirement]:
  return [r for r in requirements if r.marker is None or r.marker.evaluate({'extra': ''})]


def test_wheel_installs_only_rankdeficit_with_py_typed(wheel):
  with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
  top = {n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')}
  assert top == {'rankdeficit'}
  assert 'rankdeficit/py.typed' in names
  assert 'rankdeficit/data/imagenet100_classes.txt' in names


def test_core_requirements_are_jax_and_numpy(wheel):
  assert sorted(r.name for r in _core(_metadata(wheel))) == ['jax', 'numpy']


@pytest.mark.parametrize(
  'platform,machine,package',
  [
    ('linux', 'x86_64', 'tensorflow-cpu'),
    ('win32', 'AMD64', 'tensorflow-cpu'),
    ('linux', 'aarch64', 'tensorflow'),
    ('darwin', 'arm64', 'tensorflow'),
    ('darwin', 'x86_64', 'tensorflow'),
  ],
)
def test_train_extra_picks_the_tensorflow_that_has_wheels(wheel, platform, machine, package):
  env = {'extra': 'train', 'sys_platform': platform, 'platform_machine': machine}
  chosen = {
    r.name
    for r in _metadata(wheel)
    if r.name.startswith('tensorflow')
    and r.name != 'tensorflow-datasets'
    and r.marker.evaluate(env)
  }
  assert chosen == {package}


def _closure(requirements: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
  """Installed distributions the requirements pull in (markers for this platform)."""
  found, todo = {}, list(requirements)
  while todo:
    req = todo.pop()
    name = req.name.lower().replace('_', '-')
    if name in found:
      continue
    found[name] = importlib.metadata.distribution(req.name)
    todo += _core([Requirement(r) for r in found[name].requires or []])
  return found


def _fresh_venv(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  _run([sys.executable, '-m', 'venv', '--without-pip', str(root)])
  python = root / 'bin' / 'python'
  site = pathlib.Path(
    _run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).strip()
  )
  return python, site


def _install(wheel_path, site):
  _run(
    [
      sys.executable,
      '-m',
      'pip',
      'install',
      '--no-deps',
      '--no-index',
      '-q',
      '--target',
      str(site),
      str(wheel_path),
    ]
  )


def _link_distribution(dist: importlib.metadata.Distribution, site: pathlib.Path) -> int:
  """Symlinks a distribution's top-level entries into ``site``; returns its size in bytes."""
  here = pathlib.Path(sysconfig.get_paths()['purelib'])
  size = 0
  for file in dist.files or []:
    path = pathlib.Path(dist.locate_file(file))
    if path.is_file():
      size += path.stat().st_size
    first = pathlib.Path(file).parts[0]
    top = here / first
    if first != '..' and top.exists() and top.parent == here and not (site / top.name).exists():
      (site / top.name).symlink_to(top)
  return size


def test_core_install_imports_no_training_stack(wheel, tmp_path):
  python, site = _fresh_venv(tmp_path / 'venv')
  _install(wheel, site)
  size = sum(p.stat().st_size for p in site.rglob('*') if p.is_file())
  for dist in _closure(_core(_metadata(wheel))).values():
    size += _link_distribution(dist, site)
  script = (
    'import sys\n'
    'from rankdeficit import metrics\n'
    'import numpy as np\n'
    f'assert "{site}" in metrics.__file__, metrics.__file__\n'
    'assert int(metrics.numerical_rank(np.eye(4)[:3])) == 3\n'
    f'loaded = sorted(m for m in {TRAINING_STACK!r} if m in sys.modules)\n'
    'assert not loaded, loaded\n'
  )
  _run([str(python), '-c', script], cwd=tmp_path, env={'PATH': os.environ['PATH']})
  for module in TRAINING_STACK[:2]:  # not even importable there
    result = subprocess.run(
      [str(python), '-c', f'import {module}'],
      capture_output=True,
      cwd=tmp_path,
      env={'PATH': os.environ['PATH']},
    )
    assert result.returncode != 0
  print(f'\ncore install (rankdeficit + jax, jaxlib, numpy and their deps): {size / 2**20:.0f} MiB')


def _write_run(workdir: pathlib.Path) -> float:
  """A run directory (config.json + one checkpoint) of the quickstart MLP; returns the
  sum of its logits on a fixed input."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from configs import quickstart  # pylint: disable=import-outside-toplevel
  from rankdeficit import models
  from rankdeficit.run import checkpointing  # pylint: disable=import-outside-toplevel
  from rankdeficit.training import steps

  config = quickstart.get_config()
  config.model.num_classes, config.model.width, config.model.depth = 10, 8, 2
  model = models.create_model(config.model, 10)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1), (16, 16, 1))
  workdir.mkdir()
  checkpointing.save_config(config, str(workdir))
  checkpointer = checkpointing.Checkpointer(str(workdir))
  checkpointer.save(3, state, None)
  checkpointer.wait_until_finished()
  checkpointer.close()
  logits, _ = model.apply(steps.model_variables(state), jnp.ones((2, 16, 16, 1)), train=False)
  return float(jnp.sum(logits))


def test_load_run_after_non_editable_install_beside_a_users_configs(wheel, tmp_path):
  expected = _write_run(tmp_path / 'run')
  python, site = _fresh_venv(tmp_path / 'venv')
  _install(wheel, site)
  # this environment's packages, appended after the venv's own site-packages (a plain
  # path: the editable install's finder in there is not activated)
  (site / 'deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
  user = tmp_path / 'user_project'
  (user / 'configs').mkdir(parents=True)
  (user / 'configs' / '__init__.py').write_text('OWNER = "user"\n')
  script = (
    'import configs, jax.numpy as jnp\n'
    'from rankdeficit.plan import run_plan\n'
    f'assert "{site}" in run_plan.__file__, run_plan.__file__\n'
    'config, model, variables, step = run_plan.load_run('
    f'"{tmp_path / "run"}")\n'
    'assert configs.OWNER == "user" and step == 3, step\n'
    'assert config.model.width == 8 and isinstance(config.lr_milestones, tuple)\n'
    'logits, _ = model.apply(variables, jnp.ones((2, 16, 16, 1)), train=False)\n'
    'print(float(jnp.sum(logits)))\n'
  )
  out = _run(
    [str(python), '-c', script], cwd=user, env={'PATH': os.environ['PATH'], 'JAX_PLATFORMS': 'cpu'}
  )
  assert float(out.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-5)


def test_nothing_in_the_package_imports_configs():
  import ast  # pylint: disable=import-outside-toplevel

  offenders = []
  for path in (REPO / 'rankdeficit').rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      names = (
        [a.name for a in node.names]
        if isinstance(node, ast.Import)
        else [node.module or '']
        if isinstance(node, ast.ImportFrom)
        else []
      )
      offenders += [f'{path.name}: {n}' for n in names if n.split('.')[0] == 'configs']
  assert not offenders
