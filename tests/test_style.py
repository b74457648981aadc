"""The repository's own hygiene: one format (ruff, configured in pyproject.toml), a clean
lint, and an import graph without cycles."""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('rankdeficit', 'experiments', 'tools', 'configs')


def _ruff(*args: str) -> subprocess.CompletedProcess:
  ruff = shutil.which('ruff') or pytest.fail('ruff is not installed: pip install -e ".[test]"')
  return subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_code_is_formatted():
  result = _ruff('format', '--check', '--diff', '.')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_code_passes_the_linter():
  result = _ruff('check', '--output-format', 'concise', '.')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> dict[str, set[str]]:
  """Module -> the repository modules it imports (anywhere in the file, lazy imports too)."""
  paths = [p for pkg in PACKAGES for p in (REPO / pkg).rglob('*.py') if 'results' not in p.parts]
  modules = {_module_name(p): p for p in paths}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
      else:
        continue
      for target in targets:
        while target and target not in modules:
          target = target.rpartition('.')[0]
        # A package's __init__ importing its own submodules is how packages re-export.
        if target and target != name and not target.startswith(name + '.'):
          edges.add(target)
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle of `graph` as [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = 'done'
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_find_cycle_finds_a_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_cycles():
  assert find_cycle(import_graph()) is None


MAX_FUNCTION_LINES = 59


def long_functions(max_lines: int = MAX_FUNCTION_LINES) -> list[str]:
  """'path:function (lines)' of every function longer than `max_lines`, in the package,
  experiments, tools and tests; a config's `get_config` (its list of fields) aside."""
  found = []
  for root in (*PACKAGES, 'tests'):
    for path in (REPO / root).rglob('*.py'):
      if 'results' in path.parts:
        continue
      for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          continue
        lines = node.end_lineno - node.lineno + 1
        if lines > max_lines and not (root == 'configs' and node.name == 'get_config'):
          found.append(f'{path.relative_to(REPO)}:{node.name} ({lines})')
  return sorted(found)


def test_every_function_fits_on_a_screen():
  assert long_functions() == []


def test_long_functions_are_found():
  assert long_functions(max_lines=5)  # the check looks at the code at all


def test_run_does_not_import_training_or_analysis():
  graph = import_graph()
  upward = {
    (a, b)
    for a, targets in graph.items()
    if a.startswith('rankdeficit.run')
    for b in targets
    if b.startswith(('rankdeficit.training', 'rankdeficit.analysis'))
  }
  assert not upward, sorted(upward)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
