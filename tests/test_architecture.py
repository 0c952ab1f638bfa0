"""The layout the README promises, read from the source with ``ast`` (nothing imported):
imports only go downward, no cycles, no imports inside functions to dodge one, and the
README's architecture section names every module."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Lowest first; a module may import its own layer and the ones before it.
LAYERS = ('seqjax.utils', 'seqjax.ops', 'seqjax.layers', 'seqjax.models', 'seqjax.data',
          'seqjax.training', 'experiments', 'scripts')


def _modules() -> dict[str, Path]:
  out = {}
  for top in ('seqjax', 'experiments', 'scripts'):
    for path in (REPO / top).rglob('*.py'):
      name = '.'.join(path.relative_to(REPO).with_suffix('').parts)
      out[name.removesuffix('.__init__')] = path
  return out


def _layer(module: str) -> int:
  return max(i for i, prefix in enumerate(LAYERS)
             if module == prefix or module.startswith(prefix + '.'))


def _imports(tree: ast.Module, known: set[str]) -> list[tuple[str, bool]]:
  """``(imported module, at module level)`` for every import of a project module."""
  top_level = {id(node) for node in tree.body}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      # `from pkg import mod` imports pkg.mod when that is a module.
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in known
               else node.module for a in node.names]
    else:
      continue
    out += [(n, id(node) in top_level) for n in names
            if n.split('.')[0] in ('seqjax', 'experiments', 'scripts')]
  return out


def _graph() -> dict[str, list[tuple[str, bool]]]:
  modules = _modules()
  return {name: _imports(ast.parse(path.read_text()), set(modules))
          for name, path in modules.items()}


def test_imports_only_go_down_and_never_hide_in_functions():
  problems = []
  for module, imports in _graph().items():
    for target, top_level in imports:
      if _layer(target) > _layer(module):
        problems.append(f'{module} imports {target} (a higher layer)')
      if not top_level and module.startswith('seqjax'):
        problems.append(f'{module} imports {target} inside a function')
  assert not problems, '\n'.join(problems)


def test_no_import_cycles():
  modules = _modules()
  graph = {m: {t for t, _ in imports if t in modules} for m, imports in _graph().items()}
  state: dict[str, int] = {}  # 1 = on the current path, 2 = done

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        raise AssertionError('import cycle: ' + ' -> '.join(path + [node, nxt]))
      if nxt not in state:
        visit(nxt, path + [node])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [])


def test_readme_architecture_names_every_module():
  readme = (REPO / 'README.md').read_text()
  section = readme[readme.index('## Architecture'):readme.index('### The mixer interface')]
  missing = [str(path.relative_to(REPO)) for name, path in _modules().items()
             if name.startswith('seqjax') and path.name != '__init__.py'
             and path.name not in section and path.parent.name not in ('synthetic',)
             and not (path.name.startswith('real') and 'real*.py' in section)]
  assert not missing, f'README architecture section does not list {missing}'
