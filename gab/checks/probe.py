"""Unit-level instrumentation: which unit did it, and did each unit keep the GAB contract?

Every unit module of a design is named `{child index}_{kind}` under its block's `root`, so a Flax
module path, a parameter path or a JAX name stack (`.../blocks_1/root/0_Residual/1_Attention/qkv`)
names a unit of the tree. `Probe` intercepts every unit call while a model is traced: it tags an
exception with the unit that raised it, checks the unit's outputs against the contract (same shape
and dtype as its input, Z entries used only as its kind declares), and can record traced values per
unit, in the order the calls finish (children before their parents).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import codeunits, registry
from gab.checks.base import one_line
from gab.tree import Path, Unit
from gab.units.base import UnitModule

_UNIT_NAME = re.compile(r"^(\d+)_(\w+(?:@[0-9a-f]{8})?)$")  # `{child index}_{kind}`, code kinds too
_BLOCK_NAME = re.compile(r"^blocks_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Location:
  """A unit of the tree, and the block it ran in (None outside an LM)."""
  kind: str
  path: Path
  block: int | None = None

  def __str__(self) -> str:
    where = f"{self.kind} at {list(self.path)}"
    return where if self.block is None else f"{where} (block {self.block})"


def locate(names: Sequence[str], tree: Unit) -> tuple[Location, list[str]] | None:
  """The deepest unit named by a module path, and the names below it; None outside any unit."""
  names = [str(n) for n in names]
  if "root" not in names:
    return None
  start = names.index("root")
  block = None
  for name in names[:start]:
    m = _BLOCK_NAME.match(name)
    block = int(m[1]) if m else block
  node, path, i = tree, (), start + 1
  while i < len(names):
    m = _UNIT_NAME.match(names[i])
    if not m or int(m[1]) >= len(node.children) or node.children[int(m[1])].kind != m[2]:
      break
    node, path, i = node.children[int(m[1])], path + (int(m[1]),), i + 1
  return Location(node.kind, path, block), names[i:]


def locate_name_stack(name_stack: str, tree: Unit) -> Location | None:
  """The unit a JAX name stack (forward or `transpose(jvp(...))` backward) belongs to."""
  found = locate(name_stack.split("/"), tree)
  return found[0] if found else None


def by_unit(items: Sequence[tuple[Location | None, str]]) -> list[str]:
  """`{unit} {text}` lines, one per unit and text, with the blocks it happened in merged."""
  groups: dict[tuple, list[int | None]] = {}
  for where, text in items:
    key = (None, (), text) if where is None else (where.kind, where.path, text)
    groups.setdefault(key, []).append(None if where is None else where.block)
  lines = []
  for (kind, path, text), blocks in groups.items():
    blocks = sorted(b for b in set(blocks) if b is not None)
    if kind is None:
      lines.append(text)
      continue
    in_blocks = (f" (block {blocks[0]})" if len(blocks) == 1 else
                 f" (blocks {', '.join(map(str, blocks))})" if blocks else "")
    lines.append(f"{kind} at {list(path)}{in_blocks}{text}")
  return lines


def describe_params(keypaths, tree: Unit) -> list[str]:
  """`Attention at [0, 0, 1] (blocks 0, 1), parameter qkv/kernel`, one line per unit parameter."""
  items = []
  for keypath in keypaths:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in keypath]
    found = locate(names, tree)
    if found is None:
      items.append((None, f"parameter {'/'.join(n for n in names if n != 'params')} of the LM"))
    else:
      items.append((found[0], f", parameter {'/'.join(found[1])}"))
  return by_unit(items)


class ContractError(TypeError):
  """A unit returned something other than the pair (y, z)."""


class UnitError(Exception):
  """An exception raised inside a unit, tagged with the (innermost) unit that raised it and, for a
  code unit, the line of its source that raised it."""

  def __init__(self, where: Location, error: BaseException):
    kind, _, text = one_line(error).partition(": ")
    super().__init__(f"{kind} in {where}: {text}{source_text(error)}")
    self.where, self.error = where, error


def source_text(error: BaseException) -> str:
  """` (at line N of Kind@hash: <code>)` when a code unit's source raised `error`, else ''."""
  found = codeunits.source_line(error)
  return f" (at line {found[1]} of {found[0]}: {found[2]})" if found else ""


def error_text(e: BaseException) -> str:
  """One line for a report: the unit that raised, if known, then the error."""
  return str(e) if isinstance(e, UnitError) else one_line(e) + source_text(e)


RETURN_HINT = ("a unit's __call__ must return the pair (y, z): y an array of its input's shape and "
               "dtype, z the dict it was given (or a new dict with the entries its kind writes)")
LENGTH_HINT = ("a parameter's shape must not depend on the sequence length or the batch size (the "
               "checker runs every design at several of each): size parameters by d_model "
               "(x.shape[-1]) and hyperparameters only, and compute position-dependent terms "
               "from jnp.arange(length) instead")


def hint_for(e: BaseException, default: str) -> str:
  """The repair hint for an exception a design raised: by what went wrong, else `default`."""
  inner = e.error if isinstance(e, UnitError) else e
  if isinstance(inner, ContractError):
    return RETURN_HINT
  if type(inner).__name__ == "ScopeParamShapeError":  # flax: a parameter re-created at a new shape
    return LENGTH_HINT
  found = codeunits.source_line(e)
  if found and isinstance(inner, NameError):
    return (f"line {found[1]} of the code unit {found[0]} uses a name its module neither imports "
            f"nor defines: import it (helpers from gab.units.*) or define it")
  if found:
    return f"fix line {found[1]} of the code unit {found[0]} (the error is raised there)"
  return default


class TrackedZ(dict):
  """A Z dict that remembers which entries were looked up."""

  def __init__(self, *args):
    super().__init__(*args)
    self.looked_up: set[str] = set()

  def __getitem__(self, key):
    self.looked_up.add(key)
    return super().__getitem__(key)

  def get(self, key, default=None):
    self.looked_up.add(key)
    return super().get(key, default)

  def __contains__(self, key):
    self.looked_up.add(key)
    return super().__contains__(key)


jax.tree_util.register_pytree_node(  # units may hand their Z to JAX transformations
    TrackedZ, lambda z: (list(z.values()), list(z.keys())), lambda keys, values: dict(zip(keys, values)))


def written(z_in: dict, z_out: dict) -> list[str]:
  """The Z entries a unit call added or replaced."""
  return sorted(k for k in z_out if not dict.__contains__(z_in, k)
                or dict.__getitem__(z_out, k) is not dict.__getitem__(z_in, k))


Recorder = Callable[[Location, jax.Array, jax.Array, dict, dict], None]


class Probe:
  """Intercepts unit calls while a model is traced: `with Probe(tree) as probe: model.apply(...)`.

  Contract violations are appended to `violations` as (Location, message) and repaired (zeros of
  the input's shape, a cast to its dtype) so that tracing can go on and find the rest.
  `record(where, x, y, z_in, z_out)`, if given, sees every unit call.
  """

  def __init__(self, tree: Unit, record: Recorder | None = None):
    self.tree, self.record = tree, record
    self.violations: list[tuple[Location, str]] = []
    self.called: set[Path] = set()  # the paths of the units that ran (in any block)
    self._context = None

  def __enter__(self) -> "Probe":
    self._context = nn.intercept_methods(self._intercept)
    self._context.__enter__()
    return self

  def __exit__(self, *exc) -> Any:
    return self._context.__exit__(*exc)

  def _where(self, module: UnitModule) -> Location:
    found = locate(module.scope.path, self.tree)
    return found[0] if found else Location(module.unit.kind, ())

  def _intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, UnitModule) or len(args) < 2:
      return next_fun(*args, **kwargs)
    where = self._where(module)
    self.called.add(where.path)
    x, z_in = args[0], TrackedZ(args[1])
    snapshot = dict(z_in)
    try:
      out = next_fun(x, z_in, *args[2:], **kwargs)
    except UnitError:
      raise
    except Exception as e:  # noqa: BLE001 - tag it with the unit, whatever it is
      raise UnitError(where, e) from e
    mutated = sorted(k for k in set(snapshot) | set(dict.keys(z_in))
                     if k not in snapshot or not dict.__contains__(z_in, k)
                     or dict.__getitem__(z_in, k) is not snapshot[k])
    if mutated:  # the writes count as writes (below), from the Z as it was passed in
      self.violations.append((where, f"mutates the Z it was given in place (entries {mutated}); "
                                     f"return a new dict instead"))
      if isinstance(out, tuple) and len(out) == 2 and out[1] is z_in:
        out = (out[0], dict(z_in))
      dict.clear(z_in)
      dict.update(z_in, snapshot)
    y, z_out = self._check(where, module.unit, x, z_in, out)
    if self.record is not None:
      self.record(where, x, y, z_in, z_out)
    return y, z_out

  def uncalled(self) -> list[tuple[Location, str]]:
    """Violations for the children no parent called (the topmost of each uncalled subtree): a unit
    must call every child it declares (an uncalled child is a unit the design does not have)."""
    out = []
    for path, unit in self.tree.walk():
      if path and path not in self.called and path[:-1] in self.called:
        parent = self.tree.get(path[:-1])
        out.append((Location(parent.kind, path[:-1]), f"never calls its child {unit.kind} (child "
                    f"{path[-1]}): call every child it declares, or do not declare it"))
    return out

  def _check(self, where: Location, unit: Unit, x, z_in: TrackedZ, out):
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)
            and hasattr(out[0], "shape")):
      raise UnitError(where, ContractError(f"a unit must return (y, z) with y an array and z a "
                                           f"dict, got {type(out).__name__}"))
    y, z_out = out
    if y.shape != x.shape:
      self.violations.append((where, f"returned shape {tuple(y.shape)} for an input of shape "
                                     f"{tuple(x.shape)}"))
      y = jnp.zeros_like(x)
    elif y.dtype != x.dtype:
      self.violations.append((where, f"returned dtype {y.dtype} for an input of dtype {x.dtype}"))
      y = y.astype(x.dtype)
    spec = registry.get(unit.kind)
    if spec.is_leaf:
      undeclared = sorted(z_in.looked_up - set(spec.reads))
      if undeclared:
        self.violations.append((where, f"reads Z entries {undeclared} its kind does not declare "
                                       f"(reads={list(spec.reads)})"))
      undeclared = sorted(set(written(z_in, z_out)) - set(spec.writes))
      if undeclared:
        self.violations.append((where, f"writes Z entries {undeclared} its kind does not declare "
                                       f"(writes={list(spec.writes)})"))
    dropped = sorted(set(z_in) - set(z_out))
    if dropped:
      self.violations.append((where, f"drops Z entries {dropped}"))
      z_out = {**z_in, **z_out}
    return y, z_out
