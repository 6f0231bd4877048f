"""The allow-list code units are held to: what their source may import and name (`lint`, checked
before any of it runs), the rules as prose for the designers' prompts (`lint_rules`, rendered from
the same definitions), and the builtins their module runs with (`restricted_builtins`).
"""

from __future__ import annotations

import ast
import builtins
from typing import Any

ALLOWED_IMPORTS = ("jax", "jax.numpy", "jax.nn", "jax.lax", "jax.random", "flax", "flax.linen",
                   "numpy", "math", "functools", "typing", "dataclasses", "gab.units")
FORBIDDEN_NAMES = frozenset((
    "open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "breakpoint", "input", "help", "memoryview", "__builtins__", "exit",
    "quit", "os", "sys", "subprocess", "socket", "ctypes", "importlib", "builtins", "pickle",
    "shutil", "signal", "threading", "multiprocessing", "resource"))
# Attributes and imported names no unit needs: host callbacks (Python run from inside a jitted
# program), numpy's file I/O and foreign-function access, the registry (a unit must not re-register
# built-in kinds).
FORBIDDEN_ATTRS = frozenset((
    "debug", "callback", "io_callback", "pure_callback", "host_callback", "debug_callback",
    "experimental", "load", "save", "savez", "savez_compressed", "fromfile", "tofile", "memmap",
    "loadtxt", "savetxt", "genfromtxt", "fromregex", "ctypeslib", "DataSource", "registry",
    "register", "os", "sys", "system", "environ", "popen"))
_RUNTIME_FORBIDDEN = ("open", "exec", "eval", "compile", "globals", "locals", "vars", "breakpoint",
                      "input", "help", "exit", "quit", "memoryview")


def _allowed_module(name: str) -> bool:
  return any(name == a or (a == "gab.units" and name.startswith("gab.units.")) for a in ALLOWED_IMPORTS)


def lint(source: str) -> list[str]:
  """What the allow-list forbids, one `line N: ...` message each; empty when clean."""
  try:
    module = ast.parse(source)
  except SyntaxError as e:
    return [f"line {e.lineno}: syntax error: {e.msg}"]
  out: list[tuple[int, int, str]] = []
  for node in ast.walk(module):
    line = getattr(node, "lineno", 0)
    at = (line, getattr(node, "col_offset", 0))
    if isinstance(node, ast.Import):
      out += [(*at, f"line {line}: forbidden import {a.name}") for a in node.names if not _allowed_module(a.name)]
    elif isinstance(node, ast.ImportFrom):
      mod = node.module or ""
      if node.level or not _allowed_module(mod):
        out.append((*at, f"line {line}: forbidden import {'.' * node.level}{mod}"))
      for a in node.names:
        if a.name == "*" or a.name in FORBIDDEN_ATTRS or a.name in FORBIDDEN_NAMES or a.name.startswith("_"):
          out.append((*at, f"line {line}: forbidden import {a.name} from {mod}"))
    elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("__")):
      out.append((*at, f"line {line}: forbidden name {node.id}"))
    elif isinstance(node, ast.Attribute) and (node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRS):
      out.append((*at, f"line {line}: forbidden attribute .{node.attr}"))
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
      out.append((*at, f"line {line}: forbidden statement {type(node).__name__.lower()}"))
    elif isinstance(node, ast.arg) and node.arg.startswith("__"):
      out.append((*at, f"line {line}: forbidden argument name {node.arg}"))
  for node in module.body:
    if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.ClassDef,
                             ast.FunctionDef)) and not (isinstance(node, ast.Expr) and
                                                         isinstance(node.value, ast.Constant)):
      out.append((node.lineno, 0, f"line {node.lineno}: only imports, assignments, classes and functions may "
                 f"stand at module level, not {type(node).__name__}"))
  return list(dict.fromkeys(m for _, _, m in sorted(out)))


def lint_rules() -> list[str]:
  """What `lint` enforces, one rule a line, rendered from the same definitions (for the designers'
  prompts: a model is told exactly the rules its code is held to)."""
  return [
      f"import only these modules: {', '.join(a for a in ALLOWED_IMPORTS if a != 'gab.units')}, "
      f"gab.units and its submodules (gab.units.*); no relative import, no `from M import *`, no "
      f"imported name that starts with `_`",
      f"never use these names (not even as a variable): {', '.join(sorted(FORBIDDEN_NAMES))}; "
      f"nor any name or argument that starts with `__`",
      f"no attribute that starts with `_` (so no `self._helper`, `x.__class__`), and none of these "
      f"attributes or imported names: {', '.join(sorted(FORBIDDEN_ATTRS))}",
      "no `global` or `nonlocal` statements",
      "at module level only the docstring, imports, assignments, classes and functions",
      f"at run time these builtins are missing too: {', '.join(_RUNTIME_FORBIDDEN)}; imports outside "
      f"the list above fail",
  ]


def restricted_builtins() -> dict[str, Any]:
  """Builtins for unit code: no file, eval or introspection helpers; imports only from the list."""
  safe = {k: v for k, v in vars(builtins).items() if k not in _RUNTIME_FORBIDDEN}
  real_import = builtins.__import__

  def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
    if level or not _allowed_module(name):
      raise ImportError(f"forbidden import {name} (code units may import only {', '.join(ALLOWED_IMPORTS)})")
    return real_import(name, globals, locals, fromlist, level)

  safe["__import__"] = guarded_import
  return safe
