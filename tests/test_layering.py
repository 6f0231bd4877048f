"""The project's modules import only downwards, and never in a circle.

Layers: gab < train < evolution < genesys_jax; configs/ and launch/ are read only by genesys_jax's
entry points (and launch/). Every .py file of gab/, train/ and evolution/ is parsed (never
imported), and every import in it, at module level or inside a function (or under `if __name__ ==
"__main__":`: commands live in genesys_jax/cli/, one name each), of a higher layer or of
`configs`/`launch` fails the test. So are `importlib.import_module`/`__import__` of such a module by
a literal name and a path into configs/ (the string "configs" as a path part).

Cycles: the imports of every module of the project (the four layers, configs/ and launch/), at
module level or inside a function, make a graph (an import of `pkg.mod` or `from pkg import mod`
is an edge to `pkg.mod`); a strongly connected component of more than one module is a cycle, and
the test names its modules and the imports that close it.
"""

from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"gab": 0, "train": 1, "evolution": 2, "genesys_jax": 3}
TOP_ONLY = ("configs", "launch")  # loaded by genesys_jax entry points (and launch/) only
LIBRARIES = ("gab", "train", "evolution")
_CONFIGS_PATH = re.compile(r"(^|[\\/])configs([\\/]|$)")


def _docstrings(tree: ast.AST) -> set[int]:
  """ids of the docstring constants (module, class, function): prose may name configs/ladder.py."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        out.add(id(body[0].value))
  return out


def _imported(node: ast.AST, package: str) -> list[str]:
  """The absolute module names an import node (or import_module/__import__ call) brings in."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if isinstance(node, ast.ImportFrom):
    if node.level:
      return [package]  # relative: inside the file's own package
    return [node.module or ""]
  if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
      return [node.args[0].value]
  return []


def violations(path: str, package: str) -> list[str]:
  """One line per forbidden import or configs/ path in the file at `path` (of layer `package`)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  docs = _docstrings(tree)
  rel = os.path.relpath(path, ROOT)
  out = []
  for node in ast.walk(tree):
    for module in _imported(node, package):
      top = module.split(".")[0]
      if top in TOP_ONLY or LAYERS.get(top, -1) > LAYERS[package]:
        out.append(f"{rel}:{node.lineno}: {package} imports {module}")
    if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        and _CONFIGS_PATH.search(node.value)):
      out.append(f"{rel}:{node.lineno}: {package} names a path into configs/: {node.value!r}")
  return out


def library_files(root: str = ROOT) -> list[tuple[str, str]]:
  files = []
  for package in LIBRARIES:
    for dirpath, _, names in os.walk(os.path.join(root, package)):
      files += [(os.path.join(dirpath, n), package) for n in sorted(names) if n.endswith(".py")]
  return sorted(files)


def test_libraries_import_only_downwards():
  files = library_files()
  assert len(files) > 50, "the libraries were not found"
  bad = [line for path, package in files for line in violations(path, package)]
  assert not bad, "upward imports or configs/ paths in the libraries:\n" + "\n".join(bad)


@pytest.mark.parametrize("package, source, expected", [
    ("evolution", "from genesys_jax import cli_errors\n", 1),
    ("gab", "def f():\n  from evolution import canonical\n", 1),
    ("gab", "def f():\n  import train.trainer as t\n", 1),
    ("train", "import configs.ladder\n", 1),
    ("train", "from launch import plan\n", 1),
    ("evolution", "import importlib\nimportlib.import_module('genesys_jax.loop')\n", 1),
    ("gab", "import os\nP = os.path.join('x', 'configs', 'ladder.py')\n", 1),
    ("train", "F = 'configs/ladder.py'\n", 1),
    ("gab", '"""Run with --config=configs/ladder.py."""\nfrom gab import tree\n', 0),
    ("evolution", "from train import trainer\nfrom gab import model\nfrom . import store\n", 0),
    ("gab", "if __name__ == '__main__':\n  from genesys_jax.cli import check\n", 1),
])
def test_the_rule_itself(tmp_path, package, source, expected):
  """The parser catches each kind of violation and spares what is allowed."""
  path = tmp_path / "mod.py"
  path.write_text(source)
  assert len(violations(str(path), package)) == expected


# -- cycles -----------------------------------------------------------------------------------------
PROJECT = ("gab", "train", "evolution", "genesys_jax", "configs", "launch")


def project_modules(root: str = ROOT) -> dict[str, str]:
  """Dotted module name -> file of every module of the project (a package by its __init__.py)."""
  out = {}
  for package in PROJECT:
    for dirpath, _, names in os.walk(os.path.join(root, package)):
      for name in sorted(n for n in names if n.endswith(".py")):
        parts = os.path.relpath(os.path.join(dirpath, name), root)[:-3].split(os.sep)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(dirpath, name)
  return out


def import_graph(modules: dict[str, str]) -> dict[str, dict[str, int]]:
  """module -> {imported project module: line of the (first) import}."""
  def known(name: str) -> str | None:
    parts = name.split(".")
    return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    edges: dict[str, int] = {}
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          up = package.split(".")[:len(package.split(".")) - node.level + 1]
          base = ".".join(up + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
      else:
        names = _imported(node, package)
      for name in names:
        target = known(name)
        if target is not None and target != module:
          edges.setdefault(target, node.lineno)
    graph[module] = edges
  return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  out = []
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = len(index)
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = len(index)
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          out.append(sorted(component))
  return out


def describe(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, str]) -> str:
  inside = set(component)
  edges = [f"  {os.path.relpath(modules[m], ROOT)}:{line}: {m} imports {t}"
           for m in component for t, line in sorted(graph[m].items()) if t in inside]
  return f"cycle of {len(component)} modules: {', '.join(component)}\n" + "\n".join(edges)


def test_no_import_cycles_among_the_projects_modules():
  modules = project_modules()
  assert len(modules) > 150, "the project's modules were not found"
  graph = import_graph(modules)
  found = cycles(graph)
  assert not found, "\n".join(describe(c, graph, modules) for c in found)


def test_the_cycle_finder_itself(tmp_path):
  """A cycle through a function-level import is found; a chain and a self-import are not cycles."""
  pkg = tmp_path / "gab"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from gab import b\n")
  (pkg / "b.py").write_text("def f():\n  from gab.c import x\n")
  (pkg / "c.py").write_text("import gab.a\nimport gab.c\n")
  (pkg / "d.py").write_text("from gab import a\n")
  modules = project_modules(str(tmp_path))
  graph = import_graph(modules)
  assert cycles(graph) == [["gab.a", "gab.b", "gab.c"]]
  (pkg / "b.py").write_text("x = 1\n")
  assert cycles(import_graph(modules)) == []
