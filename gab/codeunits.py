"""Units as code: a unit kind written as one Python source text, carried by the designs that use it.

A code unit is a module source with a docstring (the kind's doc), a literal `KIND = dict(...)`
declaration and exactly one `UnitModule` subclass (see README "Units as code"):

  KIND = dict(name="TokenShift", role="sequence_mixer",
              params={"mix": {"default": 0.5, "domain": [0.25, 0.5, 0.75]}},
              slots=[], reads=[], writes=[])

The declaration is read from the AST with `ast.literal_eval`: nothing is executed to learn a kind's
role, slots, hyperparameters or Z entries. The registered kind name is `Name@hash8`, hash8 the first
8 hex digits of sha256(source), so two different sources never share a kind and a design's content
hash (which names its kinds) covers the code it runs.

- `parse` reads a source (AST only); `lint` lists what the allow-list forbids (one `line N: ...`
  message each; a lint, not the boundary: `gab.sandbox` is);
- `declare` registers a kind's declaration only: typing, GP operators, canonical forms work with it,
  and building its module raises. It is what a process holding secrets does;
- `register` executes the source (with restricted builtins and imports) and registers the real
  module. Only a process without secrets calls it: the sandbox child, a verifier child;
- `read_design` / `read_design_file` read a design that may carry code units, verifying them
  against their hashes and declaring them.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import hashlib
import re
import types
from typing import Any

from gab import registry
from gab.code_rules import (  # noqa: F401 (the API: the allow-list code units are held to)
    ALLOWED_IMPORTS, FORBIDDEN_ATTRS, FORBIDDEN_NAMES, lint, lint_rules, restricted_builtins)
from gab.registry import KindSpec, Param, Slot
from gab.tree import DesignError, Unit, design_from_json, design_units, load_design_file

KIND_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)@([0-9a-f]{8})$")


class CodeUnitError(DesignError):
  """A code unit's source is malformed or forbidden; the message names the line."""


@dataclasses.dataclass(frozen=True)
class CodeUnit:
  name: str                  # the declared name
  kind: str                  # the registered name, Name@hash8
  source: str
  declaration: dict[str, Any]
  doc: str
  class_name: str = ""       # the UnitModule subclass that implements it

  @property
  def hash(self) -> str:
    return self.kind.rsplit("@", 1)[1]


def source_hash(source: str) -> str:
  return hashlib.sha256(source.encode()).hexdigest()[:8]


def is_code_kind(kind: str) -> bool:
  return bool(KIND_RE.match(kind))


def kinds_in(tree: Unit) -> list[str]:
  """The code kinds `tree` uses, in pre-order of first use."""
  out: list[str] = []
  for _, unit in tree.walk():
    if is_code_kind(unit.kind) and unit.kind not in out:
      out.append(unit.kind)
  return out


# -- parsing -------------------------------------------------------------------------------------
def parse(source: str) -> CodeUnit:
  """The unit's declaration, read from the AST (nothing is executed)."""
  if not isinstance(source, str):
    raise CodeUnitError(f"a code unit's source must be a str, got {type(source).__name__}")
  try:
    module = ast.parse(source)
  except SyntaxError as e:
    raise CodeUnitError(f"code unit: syntax error at line {e.lineno}: {e.msg}") from None
  kind_node = None
  for node in module.body:
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KIND"
                                            for t in node.targets):
      if kind_node is not None:
        raise CodeUnitError(f"code unit: KIND assigned twice (line {node.lineno})")
      kind_node = node
  if kind_node is None:
    raise CodeUnitError("code unit: no module-level `KIND = dict(name=..., role=..., ...)` found")
  decl = _literal_kind(kind_node.value, kind_node.lineno)
  classes = [n for n in module.body if isinstance(n, ast.ClassDef)
             and any(_base_name(b) == "UnitModule" for b in n.bases)]
  if len(classes) != 1:
    raise CodeUnitError(f"code unit {decl.get('name')!r}: expected exactly one UnitModule subclass, "
                        f"found {len(classes)}")
  _validate(decl, kind_node.lineno)
  doc = ast.get_docstring(module) or ast.get_docstring(classes[0]) or ""
  return CodeUnit(decl["name"], f"{decl['name']}@{source_hash(source)}", source, decl, doc,
                  classes[0].name)


def _base_name(node: ast.expr) -> str:
  return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _literal_kind(node: ast.expr, line: int) -> dict[str, Any]:
  try:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
      if node.args or any(k.arg is None for k in node.keywords):
        raise ValueError("only keyword arguments")
      return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    value = ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
    raise CodeUnitError(f"code unit: KIND at line {line} must be a literal dict(...) or {{...}} "
                        f"of names, numbers, strings, lists and dicts ({e})") from None
  if not isinstance(value, dict):
    raise CodeUnitError(f"code unit: KIND at line {line} must be a dict, got {type(value).__name__}")
  return value


def _validate(decl: dict[str, Any], line: int) -> None:
  where = f"code unit KIND (line {line})"
  unknown = set(decl) - {"name", "role", "params", "slots", "reads", "writes", "doc"}
  if unknown:
    raise CodeUnitError(f"{where}: unknown fields {sorted(unknown)}; expected name, role, params, "
                        f"slots, reads, writes")
  name = decl.get("name")
  if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
    raise CodeUnitError(f"{where}: name must be an identifier, got {name!r}")
  if decl.get("role") not in registry.ROLES:
    raise CodeUnitError(f"{where}: role {decl.get('role')!r} is not one of {list(registry.ROLES)}")
  params = decl.get("params", {})
  if not isinstance(params, dict):
    raise CodeUnitError(f"{where}: params must be a dict name -> {{'default', 'domain'}}")
  for pname, p in params.items():
    if not isinstance(p, dict) or set(p) != {"default", "domain"} or not isinstance(p["domain"], list):
      raise CodeUnitError(f"{where}: param {pname!r} must be {{'default': v, 'domain': [v, ...]}}")
    if not p["domain"] or not all(isinstance(v, (bool, int, float, str)) for v in p["domain"]):
      raise CodeUnitError(f"{where}: param {pname!r}: domain must be a non-empty list of scalars")
    if p["default"] not in p["domain"]:
      raise CodeUnitError(f"{where}: param {pname!r}: default {p['default']!r} not in its domain "
                          f"{p['domain']!r} (a domain lists every allowed value; it is not a range)")
  slots = decl.get("slots", [])
  if not isinstance(slots, list):
    raise CodeUnitError(f"{where}: slots must be a list of {{'name', 'roles', 'min_count', 'max_count'}}")
  for s in slots:
    if not isinstance(s, dict) or not isinstance(s.get("name"), str) or \
        set(s) - {"name", "roles", "min_count", "max_count"}:
      raise CodeUnitError(f"{where}: slot {s!r} must be {{'name': str, 'roles': [...], "
                          f"'min_count': int, 'max_count': int}}")
    if any(r not in registry.ROLES for r in s.get("roles", registry.ROLES)):
      raise CodeUnitError(f"{where}: slot {s['name']!r}: roles must be among {list(registry.ROLES)}")
  for field in ("reads", "writes"):
    value = decl.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      raise CodeUnitError(f"{where}: {field} must be a list of Z entry names")


# -- declaring and registering -------------------------------------------------------------------
_UNITS: dict[str, CodeUnit] = {}   # every code unit this process knows (declared or registered)
_EXECUTED: set[str] = set()


def _as_unit(source_or_unit: str | CodeUnit) -> CodeUnit:
  return source_or_unit if isinstance(source_or_unit, CodeUnit) else parse(source_or_unit)


def _spec(unit: CodeUnit, module) -> KindSpec:
  d = unit.declaration
  params = tuple(Param(n, p["default"], tuple(p["domain"])) for n, p in sorted(d.get("params", {}).items()))
  slots = tuple(Slot(s["name"], tuple(s.get("roles", registry.ROLES)), s.get("min_count", 1),
                     s.get("max_count", 1)) for s in d.get("slots", []))
  return KindSpec(unit.kind, d["role"], module, slots=slots, params=params,
                  reads=tuple(d.get("reads", [])), writes=tuple(d.get("writes", [])),
                  doc=d.get("doc") or unit.doc)


def _declared_only(kind: str):
  def build(**_):
    raise DesignError(f"code unit {kind} is declared only in this process: its code runs only in "
                      f"a sandbox (gab.sandbox) or a verifier child")
  return build


def declare(source_or_unit: str | CodeUnit) -> str:
  """Register the kind's declaration only (no code runs); returns the kind name."""
  unit = _as_unit(source_or_unit)
  if unit.kind not in _UNITS:
    try:
      registry.register(_spec(unit, _declared_only(unit.kind)))
    except ValueError as e:
      raise CodeUnitError(str(e)) from None
    _UNITS[unit.kind] = unit
  return unit.kind


def is_executable(kind: str) -> bool:
  return kind in _EXECUTED


def register(source_or_unit: str | CodeUnit) -> str:
  """Parse, lint, execute and register the unit. ONLY in a process that holds no secrets."""
  unit = _as_unit(source_or_unit)
  if unit.kind in _EXECUTED:
    return unit.kind
  problems = lint(unit.source)
  if problems:
    raise CodeUnitError(f"code unit {unit.kind}: {problems[0]}")
  from gab.units.base import UnitModule  # pylint: disable=g-import-not-at-top
  module = types.ModuleType(f"gab_code_unit_{unit.name}_{unit.hash}")
  module.__dict__["__builtins__"] = restricted_builtins()
  try:
    exec(compile(unit.source, f"<code unit {unit.kind}>", "exec"), module.__dict__)  # noqa: S102
  except Exception as e:  # noqa: BLE001 - any error of untrusted code is the unit's fault
    found = source_line(e, {unit.kind: unit})
    where = f" (at line {found[1]}: {found[2]})" if found else ""
    raise CodeUnitError(f"code unit {unit.kind}: executing its source failed: "
                        f"{type(e).__name__}: {e}{where}") from None
  cls = module.__dict__.get(unit.class_name)
  if not (isinstance(cls, type) and issubclass(cls, UnitModule)):
    raise CodeUnitError(f"code unit {unit.kind}: {unit.class_name} is not a UnitModule subclass")
  registry.register(_spec(unit, cls))
  _UNITS[unit.kind] = unit
  _EXECUTED.add(unit.kind)
  return unit.kind


# -- lookups -------------------------------------------------------------------------------------
def unit(kind: str) -> CodeUnit:
  try:
    return _UNITS[kind]
  except KeyError:
    raise DesignError(f"code unit {kind} is not known in this process; load the design or the "
                      f"store that carries its source") from None


def forget(kind: str) -> None:
  """Unregister a code kind (tests; a process that wants a clean registry)."""
  _UNITS.pop(kind, None)
  _EXECUTED.discard(kind)
  registry.unregister(kind)


def known() -> dict[str, CodeUnit]:
  return dict(_UNITS)


_FILENAME = re.compile(r"^<code unit (\S+)>$")   # `register` compiles each source under this name


def source_line(error: BaseException, units: dict[str, CodeUnit] | None = None
                ) -> tuple[str, int, str] | None:
  """(kind, line number, that line of its source) where `error` was raised in a registered code
  unit (or one of `units`): the innermost code-unit frame of the deepest error in its `raise ...
  from` chain that has one; None when no code unit's source is on its traceback."""
  units = units or _UNITS
  chain: list[BaseException] = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  for e in reversed(chain):
    found, tb = None, e.__traceback__
    while tb is not None:
      m = _FILENAME.match(tb.tb_frame.f_code.co_filename)
      if m and m[1] in units:
        found = (m[1], tb.tb_lineno)
      tb = tb.tb_next
    if found:
      lines = units[found[0]].source.splitlines()
      return found[0], found[1], lines[found[1] - 1].strip() if found[1] <= len(lines) else ""
  return None


def sources_for(tree: Unit) -> dict[str, str]:
  """kind -> source for every code kind `tree` uses (they must be declared or registered)."""
  return {k: unit(k).source for k in kinds_in(tree)}


def verify_units(units: dict[str, str], where: str = "design") -> dict[str, CodeUnit]:
  """Parse embedded sources, checking that each key is `Name@hash8` of its source."""
  if not isinstance(units, dict):
    raise DesignError(f"{where}: 'units' must be an object kind -> source")
  out = {}
  for kind, source in units.items():
    m = KIND_RE.match(kind) if isinstance(kind, str) else None
    if m is None or not isinstance(source, str):
      raise DesignError(f"{where}: units key {kind!r} must be Name@hash8 with a source string")
    parsed = parse(source)
    if parsed.kind != kind:
      raise DesignError(f"{where}: code unit {kind}: its embedded source hashes to {parsed.kind} "
                        f"(edited after hashing?); refusing it")
    out[kind] = parsed
  return out


def declare_units(units: dict[str, str], where: str = "design") -> list[str]:
  """Verify a design's embedded code units against their hashes and declare them (nothing runs)."""
  return [declare(u) for u in verify_units(units, where).values()]


def read_design(text: str, where: str = "design") -> tuple[Unit, str | None, dict[str, str]]:
  """(tree, name, units) of a design JSON, its code units verified and declared."""
  tree, name = design_from_json(text, where)
  units = design_units(text, where)
  declare_units(units, where)
  return tree, name, units


def read_design_file(path: str) -> tuple[Unit, str | None, dict[str, str]]:
  """(tree, name, units) of a design file, its code units verified and declared."""
  tree, name, units = load_design_file(path)
  declare_units(units, path)
  return tree, name, units


def load_files(patterns) -> list[str]:
  """Declare the code units in the files matching `patterns` (globs), sorted by path; their kinds."""
  kinds = []
  for pattern in patterns:
    paths = sorted(glob.glob(pattern))
    if not paths:
      raise DesignError(f"units.files: {pattern!r} matches no file; expected globs of .py code units")
    for path in paths:
      with open(path) as f:
        source = f.read()
      try:
        problems = lint(source)
        if problems:
          raise CodeUnitError(problems[0])
        kinds.append(declare(source))
      except CodeUnitError as e:
        raise CodeUnitError(f"{path}: {e}") from None
  return kinds
