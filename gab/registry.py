"""The registry of unit kinds and their typed signatures.

Every kind declares the role it plays (what it is), its child slots (the roles each accepts, and how
many children), the domain of each hyperparameter (the values a mutation may pick; the default is
used when a tree omits the parameter), the `Z` entries it reads and writes, and the Flax module that
implements it. Type checking and GP operators work from these declarations alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from gab.tree import DesignError, Path, Scalar, Unit

# Roles: what a unit does to the [batch, length, d_model] stream.
MIXER = "sequence_mixer"    # mixes information across positions (causally)
CHANNEL = "channel_mixer"   # position-wise transformation of features
NORM = "norm"               # position-wise normalisation
BLOCK = "block"             # a combinator of other units
ROLES = (MIXER, CHANNEL, NORM, BLOCK)


@dataclasses.dataclass(frozen=True)
class Slot:
  """A child slot: the roles it accepts and how many children it holds."""
  name: str
  roles: tuple[str, ...] = ROLES
  min_count: int = 1
  max_count: int = 1

  @property
  def variadic(self) -> bool:
    return self.max_count != 1


@dataclasses.dataclass(frozen=True)
class Param:
  """A hyperparameter: its default and the finite domain mutation picks from."""
  name: str
  default: Scalar
  domain: tuple[Scalar, ...]


@dataclasses.dataclass(frozen=True)
class KindSpec:
  name: str
  role: str
  module: Callable[..., Any]          # a flax.linen Module class taking (unit, layer, n_layers, dtype)
  slots: tuple[Slot, ...] = ()
  params: tuple[Param, ...] = ()
  reads: tuple[str, ...] = ()         # Z entries read
  writes: tuple[str, ...] = ()        # Z entries written
  doc: str = ""

  def param(self, name: str) -> Param:
    for p in self.params:
      if p.name == name:
        return p
    raise KeyError(name)

  @property
  def is_leaf(self) -> bool:
    return not self.slots


_REGISTRY: dict[str, KindSpec] = {}


def register(spec: KindSpec) -> KindSpec:
  if spec.role not in ROLES:
    raise ValueError(f"kind {spec.name}: role {spec.role!r} not in {ROLES}")
  if sum(s.variadic for s in spec.slots) and len(spec.slots) != 1:
    raise ValueError(f"kind {spec.name}: a variadic slot must be the kind's only slot")
  for p in spec.params:
    if p.default not in p.domain:
      raise ValueError(f"kind {spec.name}: default of {p.name} not in its domain")
  _REGISTRY[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Forget a kind (code units a test or a sandbox registered); built-in kinds stay registered."""
  _REGISTRY.pop(name, None)


def kinds() -> dict[str, KindSpec]:
  """All registered kinds, in registration order (which is fixed by import order)."""
  _ensure_units_loaded()
  return dict(_REGISTRY)


def get(kind: str) -> KindSpec:
  _ensure_units_loaded()
  try:
    return _REGISTRY[kind]
  except KeyError:
    raise DesignError(f"unknown unit kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}") from None


def kinds_with_role(roles) -> list[KindSpec]:
  return [s for s in kinds().values() if s.role in roles]


def _ensure_units_loaded():
  import gab.units  # noqa: F401  (registers the built-in kinds)


# -- typing -------------------------------------------------------------------------------------
def slot_of_children(spec: KindSpec, n_children: int) -> list[Slot]:
  """The slot each child position belongs to, or a DesignError if the count does not fit."""
  if len(spec.slots) == 1 and spec.slots[0].variadic:
    slot = spec.slots[0]
    if not slot.min_count <= n_children <= slot.max_count:
      raise DesignError(f"{spec.name} takes {slot.min_count}..{slot.max_count} children "
                        f"in slot '{slot.name}', got {n_children}")
    return [slot] * n_children
  if n_children != len(spec.slots):
    names = ", ".join(s.name for s in spec.slots) or "none"
    raise DesignError(f"{spec.name} takes {len(spec.slots)} children ({names}), got {n_children}")
  return list(spec.slots)


def type_errors(tree: Unit) -> list[tuple[Path, str]]:
  """Every typing problem of the tree as (path, message); empty when the tree is well typed."""
  errors: list[tuple[Path, str]] = []
  for path, unit in tree.walk():
    where = f"{unit.kind} at {list(path)}"
    try:
      spec = get(unit.kind)
    except DesignError as e:
      errors.append((path, f"{where}: {e}"))
      continue
    try:
      slots = slot_of_children(spec, len(unit.children))
    except DesignError as e:
      errors.append((path, f"{where}: {e}"))
      slots = []
    for i, (slot, child) in enumerate(zip(slots, unit.children)):
      child_spec = _REGISTRY.get(child.kind)
      if child_spec is not None and child_spec.role not in slot.roles:
        errors.append((path + (i,), f"{child.kind} at {list(path + (i,))} is a {child_spec.role}, "
                                    f"but slot '{slot.name}' of {unit.kind} accepts {list(slot.roles)}"))
    known = {p.name: p for p in spec.params}
    for name, value in unit.params:
      if name not in known:
        errors.append((path, f"{where}: unknown hyperparameter {name!r}; "
                             f"expected one of {sorted(known) or 'none'}"))
      elif value not in known[name].domain or type(value) is not type(known[name].default):
        errors.append((path, f"{where}: {name}={value!r} is outside its domain "
                             f"{list(known[name].domain)}"))
  return errors


def check_types(tree: Unit) -> Unit:
  """Raise a DesignError naming the first problem; return the tree with defaults filled in."""
  errors = type_errors(tree)
  if errors:
    raise DesignError(errors[0][1])
  return normalize(tree)


def normalize(tree: Unit) -> Unit:
  """Fill omitted hyperparameters with their defaults, so equal designs hash equally."""
  spec = get(tree.kind)
  params = {p.name: p.default for p in spec.params}
  params.update(tree.hparams)
  return Unit.make(tree.kind, [normalize(c) for c in tree.children], **params)


def hparam(unit: Unit, name: str) -> Scalar:
  """A unit's hyperparameter, or the kind's default."""
  value = unit.get_param(name)
  return get(unit.kind).param(name).default if value is None else value
