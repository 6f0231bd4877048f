"""Rules every GP operator output obeys, and the helpers the operators share.

`Bounds` and `violations` define an acceptable child (see `evolution/operators.py`); `_first`
returns the first acceptable candidate in a key-drawn order. The other helpers make discrete
choices from a jax key and read the registry's typing rules (roles, slots, Z reads and writes).
Growth (`evolution/growth.py`), crossover (`evolution/crossover.py`) and the mutations in
`evolution/operators.py` all build on this module.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from evolution.canonical import canonical_id
from gab import registry
from gab.checks import zrule
from gab.registry import MIXER, KindSpec, Slot
from gab.tree import Path, Unit

Operator = Callable[..., "tuple[Unit, str] | None"]


@dataclasses.dataclass(frozen=True)
class Bounds:
  """Size bounds every operator output respects (`config.evolution.max_depth/max_size`)."""
  max_depth: int = 8
  max_size: int = 32

  @classmethod
  def from_config(cls, cfg: Any) -> "Bounds":
    return cls(int(cfg.max_depth), int(cfg.max_size))


def _rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded from a jax key, for discrete choices over Python lists."""
  seed = np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist()
  return np.random.default_rng(seed)


def _choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
  return items[int(rng.integers(len(items)))]


def _where(path: Path) -> str:
  return f"at {list(path)}"


def _spec(unit: Unit) -> KindSpec:
  return registry.get(unit.kind)


def _kinds(roles: Sequence[str] = registry.ROLES) -> list[KindSpec]:
  """Registered kinds with one of `roles`, by name: choices do not depend on import order."""
  return sorted((s for s in registry.kinds().values() if s.role in roles), key=lambda s: s.name)


def _n_mixers(tree: Unit) -> int:
  return sum(_spec(u).role == MIXER for _, u in tree.walk())


def _slot_roles(tree: Unit, path: Path) -> tuple[str, ...]:
  """The roles the slot at `path` accepts; the root (an LM block) accepts any."""
  if not path:
    return registry.ROLES
  parent = tree.get(path[:-1])
  return registry.slot_of_children(_spec(parent), len(parent.children))[path[-1]].roles


def _positions(spec: KindSpec, n: int | None = None) -> list[Slot]:
  """The slot of each child of a new `spec` unit; variadic slots get `n` (default 2) children."""
  if len(spec.slots) == 1 and spec.slots[0].variadic:
    slot = spec.slots[0]
    return [slot] * min(max(slot.min_count, 2 if n is None else n), slot.max_count)
  return list(spec.slots)


def _count(rng: np.random.Generator, spec: KindSpec, n_max: int) -> int | None:
  """A random child count for a new variadic `spec` unit: 2 or more where the budget allows."""
  if not (len(spec.slots) == 1 and spec.slots[0].variadic):
    return None
  hi = min(spec.slots[0].max_count, n_max)
  lo = min(max(spec.slots[0].min_count, 2), hi)
  return int(rng.integers(lo, hi + 1))


@functools.cache
def _lm_z() -> tuple[str, ...]:
  """The Z entries the LM gives every block."""
  return zrule.lm_provided()


def violations(tree: Unit, bounds: Bounds = Bounds()) -> list[str]:
  """Why `tree` is not an acceptable operator output; empty when it is."""
  problems = [msg for _, msg in registry.type_errors(tree)]
  if problems:
    return problems
  if tree.size() > bounds.max_size:
    problems.append(f"{tree.size()} units > max_size {bounds.max_size}")
  if tree.depth() > bounds.max_depth:
    problems.append(f"depth {tree.depth()} > max_depth {bounds.max_depth}")
  if not _n_mixers(tree):
    problems.append("no sequence mixer")
  for path, unit, missing in zrule.reads_before_writes(tree):  # the checker's rule, shared
    problems.append(f"{unit.kind} {_where(path)} reads Z {missing} before anything writes it")
  return problems


def _first(rng: np.random.Generator, options: list[Any], make: Callable[[Any], Any],
           parents: Sequence[Unit], bounds: Bounds) -> tuple[Unit, str] | None:
  """The first acceptable `make(option)` over `options` in a key-drawn order."""
  parent_ids = [canonical_id(p) for p in parents]
  for i in rng.permutation(len(options)):
    out = make(options[int(i)])
    if out is None:
      continue
    child = registry.normalize(out[0])
    if not violations(child, bounds) and canonical_id(child) not in parent_ids:
      return child, out[1]
  return None


def first_operator(key: jax.Array, table: dict[str, Operator], *args) -> tuple[Unit, str] | None:
  """Try the operators of `table` in a key-drawn order; the first result, described `name: change`."""
  k_order, k_apply = jax.random.split(key)
  names = list(table)
  for i in _rng(k_order).permutation(len(names)):
    out = table[names[int(i)]](k_apply, *args)
    if out is not None:
      return out[0], f"{names[int(i)]}: {out[1]}"
  return None
