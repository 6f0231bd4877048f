"""Unit trees: the immutable design representation that GP operators rewrite.

A design is a tree of `Unit`s. Each unit has a `kind` (a name in the registry), hyperparameters
`params` (a sorted tuple of (name, value) pairs of JSON scalars) and `children` (a tuple of units).
Units are frozen, hashable, comparable and registered as JAX pytrees (hyperparameter values are the
leaves, kinds and parameter names are static), so `jax.tree.map` can rewrite hyperparameters and a
unit can be a static attribute of a Flax module.

Paths address subtrees: `()` is the root, `(1, 0)` the first child of the root's second child.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterator, Mapping

import jax

Path = tuple[int, ...]
Scalar = bool | int | float | str

DESIGN_FORMAT = "genesys_jax.design/1"
MAX_DESIGN_BYTES = 16 << 20  # a design file larger than this is refused unread
MAX_DEPTH = 64               # units nested deeper than this are refused (evolution stays <= ~8)
DESIGN_FORMAT_V2 = "genesys_jax.design/2"  # /1 plus "units": {"Name@hash8": source} (gab.codeunits)


class DesignError(ValueError):
  """A design (tree or JSON) is malformed; the message names what and where."""


def _check_scalar(name: str, value: Any) -> Scalar:
  if isinstance(value, (bool, int, float, str)):
    return value
  raise DesignError(f"hyperparameter {name!r} = {value!r}: expected a bool, int, float or str")


@dataclasses.dataclass(frozen=True, eq=True, repr=False)
class Unit:
  """One node of a design tree; build with `Unit.make(kind, children, **params)`."""

  kind: str
  params: tuple[tuple[str, Scalar], ...] = ()
  children: tuple["Unit", ...] = ()

  def __post_init__(self):
    if not isinstance(self.kind, str) or not self.kind:
      raise DesignError(f"unit kind must be a non-empty string, got {self.kind!r}")
    names = [k for k, _ in self.params]
    if names != sorted(set(names)):
      raise DesignError(f"{self.kind}: params must be sorted unique (name, value) pairs")
    for child in self.children:
      if not isinstance(child, Unit):
        raise DesignError(f"{self.kind}: children must be Units, got {type(child).__name__}")

  @classmethod
  def make(cls, kind: str, children=(), **params) -> "Unit":
    items = tuple(sorted((k, _check_scalar(k, v)) for k, v in params.items()))
    return cls(kind, items, tuple(children))

  # -- accessors -----------------------------------------------------------------------------
  @property
  def hparams(self) -> dict[str, Scalar]:
    return dict(self.params)

  def get_param(self, name: str, default: Any = None) -> Any:
    return dict(self.params).get(name, default)

  def with_params(self, **updates) -> "Unit":
    merged = {**dict(self.params), **updates}
    return Unit.make(self.kind, self.children, **merged)

  def with_children(self, children) -> "Unit":
    return Unit(self.kind, self.params, tuple(children))

  # -- structure -----------------------------------------------------------------------------
  def size(self) -> int:
    return 1 + sum(c.size() for c in self.children)

  def depth(self) -> int:
    return 1 + max((c.depth() for c in self.children), default=0)

  def walk(self, path: Path = ()) -> Iterator[tuple[Path, "Unit"]]:
    """Pre-order (path, unit) pairs; the order is fixed by the tree alone."""
    yield path, self
    for i, child in enumerate(self.children):
      yield from child.walk(path + (i,))

  def get(self, path: Path) -> "Unit":
    node = self
    for depth, i in enumerate(path):
      if not 0 <= i < len(node.children):
        raise DesignError(f"path {tuple(path)}: {node.kind} at {tuple(path[:depth])} has "
                          f"{len(node.children)} children, no index {i}")
      node = node.children[i]
    return node

  def replace(self, path: Path, new: "Unit") -> "Unit":
    """A new tree with the subtree at `path` replaced by `new` (self is unchanged)."""
    if not path:
      return new
    head, rest = path[0], path[1:]
    if not 0 <= head < len(self.children):
      raise DesignError(f"path {tuple(path)}: {self.kind} has {len(self.children)} children")
    children = list(self.children)
    children[head] = children[head].replace(rest, new)
    return self.with_children(children)

  # -- serialisation -------------------------------------------------------------------------
  def to_dict(self) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": self.kind}
    if self.params:
      out["params"] = dict(self.params)
    if self.children:
      out["children"] = [c.to_dict() for c in self.children]
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any], where: str = "root", _depth: int = 1) -> "Unit":
    if _depth > MAX_DEPTH:
      raise DesignError(f"{where}: units nested more than {MAX_DEPTH} deep")
    if not isinstance(data, Mapping):
      raise DesignError(f"{where}: expected an object with 'kind', got {type(data).__name__}")
    extra = set(data) - {"kind", "params", "children"}
    if extra:
      raise DesignError(f"{where}: unexpected fields {sorted(extra)}; expected kind, params, children")
    if "kind" not in data or not isinstance(data["kind"], str):
      raise DesignError(f"{where}: missing string field 'kind'")
    params = data.get("params", {})
    if not isinstance(params, Mapping):
      raise DesignError(f"{where} ({data['kind']}): 'params' must be an object")
    children = data.get("children", [])
    if not isinstance(children, list):
      raise DesignError(f"{where} ({data['kind']}): 'children' must be a list")
    kids = [cls.from_dict(c, f"{where}.children[{i}]", _depth + 1) for i, c in enumerate(children)]
    try:
      if not all(isinstance(k, str) for k in params):
        raise DesignError("hyperparameter names must be strings")
      return cls(data["kind"], tuple(sorted((k, _check_scalar(k, v)) for k, v in params.items())),
                 tuple(kids))
    except DesignError as e:
      raise DesignError(f"{where} ({data['kind']}): {e}") from None

  def canonical_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

  def content_hash(self) -> str:
    """A stable id: sha256 of the canonical JSON, the same on every process and machine."""
    return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

  # -- rendering -----------------------------------------------------------------------------
  def _label(self) -> str:
    if not self.params:
      return self.kind
    return f"{self.kind}[{', '.join(f'{k}={v}' for k, v in self.params)}]"

  def render(self) -> str:
    """One line: `Residual(Sequence(RMSNorm, Attention[n_heads=4]))`."""
    if not self.children:
      return self._label()
    return f"{self._label()}({', '.join(c.render() for c in self.children)})"

  def render_tree(self, indent: str = "  ") -> str:
    """Indented, one unit a line, each prefixed by its path."""
    lines = []
    for path, unit in self.walk():
      lines.append(f"{indent * len(path)}{unit._label()}")
    return "\n".join(lines)

  def __repr__(self) -> str:
    return f"Unit<{self.render()}>"


def _flatten_with_keys(unit: Unit):
  keyed = [(jax.tree_util.DictKey(k), v) for k, v in unit.params]
  keyed += [(jax.tree_util.SequenceKey(i), c) for i, c in enumerate(unit.children)]
  aux = (unit.kind, tuple(k for k, _ in unit.params), len(unit.children))
  return keyed, aux


def _unflatten(aux, leaves) -> Unit:
  kind, names, n_children = aux
  leaves = list(leaves)
  n_params = len(names)
  params = tuple(zip(names, leaves[:n_params]))
  # Bypass validation: jax may unflatten with placeholder leaves (e.g. object() sentinels).
  unit = object.__new__(Unit)
  object.__setattr__(unit, "kind", kind)
  object.__setattr__(unit, "params", params)
  object.__setattr__(unit, "children", tuple(leaves[n_params:n_params + n_children]))
  return unit


jax.tree_util.register_pytree_with_keys(
    Unit, _flatten_with_keys, _unflatten,
    flatten_func=lambda u: ([v for _, v in u.params] + list(u.children), _flatten_with_keys(u)[1]))


# -- design files -------------------------------------------------------------------------------
def design_to_json(tree: Unit, name: str | None = None, units: Mapping[str, str] | None = None) -> str:
  """The design JSON written by `gab.seeds` and kept in the store's `designs.tree` column: /1, or
  /2 with the embedded source of every code unit when `units` (kind -> source) is non-empty."""
  doc = {"format": DESIGN_FORMAT, "tree": tree.to_dict()}
  if units:
    doc["format"], doc["units"] = DESIGN_FORMAT_V2, dict(units)
  if name:
    doc["name"] = name
  return json.dumps(doc, sort_keys=True, indent=1)


def _finite(text: str) -> float:
  value = float(text)
  if value != value or value in (float("inf"), float("-inf")):
    raise DesignError(f"number {text[:40]} is not a finite float")
  return value


def _no_constant(name: str):
  raise DesignError(f"{name} is not a number JSON allows in a design")


def _parse(text: str, where: str) -> tuple[Unit, str | None, dict[str, str]]:
  try:
    doc = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
  except json.JSONDecodeError as e:
    raise DesignError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
  except RecursionError:
    raise DesignError(f"{where}: JSON nested too deeply (a design's units nest at most "
                      f"{MAX_DEPTH} deep)") from None
  except DesignError as e:
    raise DesignError(f"{where}: {e}") from None
  except (ValueError, TypeError) as e:  # e.g. an integer of more digits than Python converts
    raise DesignError(f"{where}: unreadable JSON value ({str(e).splitlines()[0][:120]})") from None
  if isinstance(doc, dict) and "tree" in doc:
    fmt = doc.get("format", DESIGN_FORMAT)
    if fmt not in (DESIGN_FORMAT, DESIGN_FORMAT_V2):
      raise DesignError(f"{where}: format {fmt!r} is not {DESIGN_FORMAT!r} or {DESIGN_FORMAT_V2!r}")
    units = doc.get("units", {}) if fmt == DESIGN_FORMAT_V2 else {}
    if not isinstance(units, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in units.items()):
      raise DesignError(f"{where}: 'units' must be an object of kind name -> source text")
    name = doc.get("name")
    return _encodable(Unit.from_dict(doc["tree"], "tree"), where), name, dict(units)
  if isinstance(doc, dict) and "kind" in doc:  # a bare unit tree is accepted too
    return _encodable(Unit.from_dict(doc, "tree"), where), None, {}
  raise DesignError(f"{where}: expected an object with 'tree' (a unit tree with 'kind', "
                    f"'params', 'children')")


def _encodable(tree: Unit, where: str) -> Unit:
  try:
    json.dumps(tree.to_dict(), ensure_ascii=False).encode("utf-8")  # printable, storable text
  except UnicodeEncodeError as e:
    raise DesignError(f"{where}: text with a lone surrogate ({e.object[e.start:e.end]!a}) is not "
                      f"valid Unicode") from None
  return tree


def design_from_json(text: str, where: str = "design") -> tuple[Unit, str | None]:
  """(tree, name) of a design JSON. A /2 design's code units are not looked at: a design that may
  carry units the process has not declared is read with `gab.codeunits.read_design`."""
  tree, name, _ = _parse(text, where)
  return tree, name


def design_units(text: str, where: str = "design") -> dict[str, str]:
  """kind -> source of the code units a design JSON embeds ({} for /1; `gab.codeunits.verify_units`
  checks them against their hashes)."""
  return _parse(text, where)[2]


def _read(path: str) -> str:
  """A design file's text: UTF-8 of at most MAX_DESIGN_BYTES; any problem is one DesignError line."""
  try:
    with open(path, "rb") as f:
      raw = f.read(MAX_DESIGN_BYTES + 1)
  except OSError as e:
    raise DesignError(f"cannot read design file {path}: {e.strerror}") from None
  if len(raw) > MAX_DESIGN_BYTES:
    raise DesignError(f"{path}: larger than the {MAX_DESIGN_BYTES >> 20} MiB a design file may have")
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DesignError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                      f"a design file is UTF-8 JSON") from None


def load_design(path: str) -> tuple[Unit, str | None]:
  return design_from_json(_read(path), where=path)


def load_design_file(path: str) -> tuple[Unit, str | None, dict[str, str]]:
  """(tree, name, units): a design file with the sources of its code units (not verified:
  `gab.codeunits.read_design_file` verifies and declares them)."""
  return _parse(_read(path), path)
