"""The libraries import only downwards: gab < train < evolution < genesys_jax; configs/ and launch/
are read only by genesys_jax's entry points (and launch/).

Every .py file of gab/, train/ and evolution/ is parsed (never imported), and every import in it,
at module level or inside a function, of a higher layer or of `configs`/`launch` fails the test,
unless it sits under `if __name__ == "__main__":` (the compatibility shims that keep old
`python -m gab.checker`-style commands running). So are `importlib.import_module`/`__import__` of
such a module by a literal name and a path into configs/ (the string "configs" as a path part).
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


def _is_main_guard(node: ast.AST) -> bool:
  """`if __name__ == "__main__":`."""
  if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
    return False
  t = node.test
  return (isinstance(t.left, ast.Name) and t.left.id == "__name__" and len(t.ops) == 1
          and isinstance(t.ops[0], ast.Eq) and len(t.comparators) == 1
          and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "__main__")


def _docstrings(tree: ast.AST) -> set[int]:
  """ids of the docstring constants (module, class, function): prose may name configs/ladder.py."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        out.add(id(body[0].value))
  return out


def _walk_outside_main(node: ast.AST):
  """Every node under `node`, skipping the bodies of `if __name__ == "__main__":` blocks."""
  for child in ast.iter_child_nodes(node):
    if _is_main_guard(child):
      for sub in child.orelse:
        yield sub
        yield from _walk_outside_main(sub)
      continue
    yield child
    yield from _walk_outside_main(child)


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
  for node in _walk_outside_main(tree):
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
    ("gab", "if __name__ == '__main__':\n  from genesys_jax.cli import check\n", 0),
    ("gab", "if __name__ == '__main__':\n  pass\nelse:\n  import genesys_jax\n", 1),
])
def test_the_rule_itself(tmp_path, package, source, expected):
  """The parser catches each kind of violation and spares what is allowed."""
  path = tmp_path / "mod.py"
  path.write_text(source)
  assert len(violations(str(path), package)) == expected
