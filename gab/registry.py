"""The registry of unit kinds and their typed signatures.

Every kind declares the role it plays (what it is), its child slots (the roles each accepts, and how
many children), the domain of each hyperparameter (the values a mutation may pick; the default is
used when a tree omits the parameter), the `Z` entries it reads and writes, and the Flax module that
implements it (the declarations and the table: gab/specs.py). Type checking and GP operators work
from these declarations alone.
"""

from __future__ import annotations

import gab.units  # noqa: F401  (registers the built-in kinds: every user of the registry sees them)
from gab.specs import (  # noqa: F401  (the API)
    _REGISTRY, BLOCK, CHANNEL, MIXER, NORM, ROLES, KindSpec, Param, Slot, hparam, normalize, register,
    unregister)
from gab.specs import spec as get  # the registered kind of a name (a DesignError if there is none)
from gab.tree import DesignError, Path, Unit


def kinds() -> dict[str, KindSpec]:
  """All registered kinds, in registration order (which is fixed by import order)."""
  return dict(_REGISTRY)


def kinds_with_role(roles) -> list[KindSpec]:
  return [s for s in kinds().values() if s.role in roles]


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
