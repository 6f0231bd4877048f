"""GP operators: pure functions of a `jax.random` key and parent trees that return a child tree.

Three modes make a child (`propose` picks one): `scratch` grows a random tree, `mutation` changes one
parent in one place (`MUTATIONS`), `crossover` combines two or more parents (`CROSSOVERS`). Every
operator returns `(child, description)`, the description saying in a few words what changed, or
None when the parent admits no such change. A child is only returned when it is acceptable:
- well typed (`registry.type_errors(child) == []`) and normalised (defaults filled in);
- every Z entry a unit reads is provided by the LM or written by a unit that runs before it;
- within `Bounds` (depth and size) and holding at least one sequence mixer;
- a new design: its canonical id differs from every parent's (so swapping two Parallel branches,
  or collapsing a single-step Sequence, does not count as a change).
Each operator lists every candidate change in an order fixed by the trees and the registry,
shuffles the list with the key and returns the first acceptable one: deterministic for a key, and
None only when no candidate is acceptable.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from evolution.canonical import canonical_id
from gab import registry
from gab.model import initial_z
from gab.registry import BLOCK, MIXER, KindSpec, Slot
from gab.tree import Path, Unit

Operator = Callable[..., "tuple[Unit, str] | None"]

MODE_PROBS = {"scratch": 0.05, "mutation": 0.75, "crossover": 0.20}
COMBINATOR_PROB = 0.7     # growth picks a combinator at depth d with probability 0.7 ** (d + 1)
SIBLING_MAX_SIZE = 3      # the largest new sibling `insert` grows


@dataclasses.dataclass(frozen=True)
class Bounds:
  """Size bounds every operator output respects (`config.evolution.max_depth/max_size`)."""
  max_depth: int = 8
  max_size: int = 32

  @classmethod
  def from_config(cls, cfg: Any) -> "Bounds":
    return cls(int(cfg.get("max_depth", cls.max_depth)), int(cfg.get("max_size", cls.max_size)))


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
  return tuple(initial_z(np.zeros((1, 1), np.int32)))


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
  available = list(_lm_z())
  for path, unit in tree.walk():  # pre-order is execution order: children run in index order
    missing = [name for name in _spec(unit).reads if name not in available]
    if missing:
      problems.append(f"{unit.kind} {_where(path)} reads Z {missing} before anything writes it")
    available.extend(_spec(unit).writes)
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


# -- growth -------------------------------------------------------------------------------------
def random_unit(rng: np.random.Generator, spec: KindSpec, children=()) -> Unit:
  """A `spec` unit whose hyperparameters are each the default or, half the time, a random value."""
  params = {p.name: p.default if rng.random() < 0.5 else _choice(rng, p.domain) for p in spec.params}
  return Unit.make(spec.name, children, **params)


def grow(rng: np.random.Generator, roles: Sequence[str], max_depth: int, max_size: int,
         need_mixer: bool = False, level: int = 0) -> Unit | None:
  """A random well-typed subtree with a root of one of `roles`, within the depth and size given.

  Combinators get rarer with depth; with `need_mixer` one child at each level carries the need
  down to a sequence-mixer leaf. None when no subtree fits.
  """
  if max_depth < 1 or max_size < 1:
    return None
  leaves = [s for s in _kinds(roles) if s.is_leaf and (s.role == MIXER or not need_mixer)]
  combos = [s for s in _kinds(roles) if not s.is_leaf and max_depth >= 2
            and 1 + len(_positions(s, 1)) <= max_size]
  if combos and (not leaves or rng.random() < COMBINATOR_PROB ** (level + 1)):
    spec = _choice(rng, combos)
    positions = _positions(spec, _count(rng, spec, max_size - 1))
    carriers = [i for i, s in enumerate(positions) if MIXER in s.roles or BLOCK in s.roles]
    if need_mixer and not carriers:
      return None
    carrier = _choice(rng, carriers) if need_mixer else -1
    children, budget = [], max_size - 1
    for i, slot in enumerate(positions):
      child = grow(rng, slot.roles, max_depth - 1, budget - (len(positions) - i - 1),
                   need_mixer=i == carrier, level=level + 1)
      if child is None:
        return None
      children.append(child)
      budget -= child.size()
    return random_unit(rng, spec, children)
  return random_unit(rng, _choice(rng, leaves)) if leaves else None


def scratch(key: jax.Array, bounds: Bounds = Bounds(), avoid: Sequence[Unit] = (),
            max_tries: int = 64) -> tuple[Unit, str]:
  """A random acceptable block (a combinator holding a sequence mixer), unlike any of `avoid`."""
  rng = _rng(key)
  out = _first(rng, list(range(max_tries)), lambda _: _grown(rng, bounds), avoid, bounds)
  if out is None:
    raise ValueError(f"scratch growth found no acceptable tree in {max_tries} tries within {bounds}")
  return out


def _grown(rng: np.random.Generator, bounds: Bounds) -> tuple[Unit, str] | None:
  tree = grow(rng, (BLOCK,), bounds.max_depth, bounds.max_size, need_mixer=True)
  return None if tree is None else (tree, f"grew {tree.size()} units, depth {tree.depth()}")


# -- mutations ----------------------------------------------------------------------------------
def mutate_hparam(key: jax.Array, tree: Unit, bounds: Bounds = Bounds()) -> tuple[Unit, str] | None:
  """Change one hyperparameter to another value in its domain."""
  tree = registry.normalize(tree)
  options = [(path, p.name, value) for path, unit in tree.walk() for p in _spec(unit).params
             for value in p.domain if value != registry.hparam(unit, p.name)]

  def make(option):
    path, name, new = option
    unit = tree.get(path)
    old = registry.hparam(unit, name)
    return tree.replace(path, unit.with_params(**{name: new})), f"{unit.kind} {_where(path)}: {name} {old} -> {new}"
  return _first(_rng(key), options, make, [tree], bounds)


def mutate_replace(key: jax.Array, tree: Unit, bounds: Bounds = Bounds()) -> tuple[Unit, str] | None:
  """Replace a non-root subtree by a new one of the same role: a leaf of another kind, or a
  freshly grown combinator subtree (at most about twice the old one's size)."""
  tree, rng = registry.normalize(tree), _rng(key)
  options = [path for path, _ in tree.walk() if path]

  def make(path):
    old = tree.get(path)
    role = _spec(old).role
    if role != BLOCK:
      kinds = [s for s in _kinds((role,)) if s.is_leaf and s.name != old.kind]
      new = random_unit(rng, _choice(rng, kinds)) if kinds else None
    else:
      size = min(bounds.max_size - tree.size() + old.size(), 2 * old.size() + 2)
      new = grow(rng, (BLOCK,), bounds.max_depth - len(path), size,
                 need_mixer=_n_mixers(tree) == _n_mixers(old))
    if new is None:
      return None
    return tree.replace(path, new), f"replace {old.render()} {_where(path)} with {new.render()}"
  return _first(rng, options, make, [tree], bounds)


def mutate_insert(key: jax.Array, tree: Unit, bounds: Bounds = Bounds()) -> tuple[Unit, str] | None:
  """Wrap a subtree in a combinator (Residual, Gate, Sequence, Parallel...), growing new siblings
  (of at most SIBLING_MAX_SIZE units) for the combinator's other slots."""
  tree, rng = registry.normalize(tree), _rng(key)
  wrappers = [s for s in _kinds() if not s.is_leaf]
  options = [(path, w) for path, unit in tree.walk() for w in wrappers if w.role in _slot_roles(tree, path)
             and any(_spec(unit).role in s.roles for s in _positions(w))]

  def make(option):
    path, wrapper = option
    unit = tree.get(path)
    positions = _positions(wrapper)
    own = _choice(rng, [i for i, s in enumerate(positions) if _spec(unit).role in s.roles])
    budget = bounds.max_size - tree.size() - 1
    children, siblings = [], []
    for i, slot in enumerate(positions):
      if i == own:
        children.append(unit)
        continue
      sibling = grow(rng, slot.roles, bounds.max_depth - len(path) - 1,
                     min(SIBLING_MAX_SIZE, budget - (len(positions) - i - 1)), level=1)
      if sibling is None:
        return None
      budget -= sibling.size()
      children.append(sibling)
      siblings.append(sibling.render())
    new = random_unit(rng, wrapper, children)
    extra = f" with {', '.join(siblings)}" if siblings else ""
    return tree.replace(path, new), f"wrap {unit.kind} {_where(path)} in {wrapper.name}{extra}"
  return _first(rng, options, make, [tree], bounds)


def mutate_delete(key: jax.Array, tree: Unit, bounds: Bounds = Bounds()) -> tuple[Unit, str] | None:
  """Collapse a combinator to one of its children (when the child fits the combinator's slot), or
  drop one child of a variadic combinator that holds more than its minimum."""
  tree = registry.normalize(tree)
  options = []
  for path, unit in tree.walk():
    spec = _spec(unit)
    options += [("collapse", path, j) for j, c in enumerate(unit.children)
                if _spec(c).role in _slot_roles(tree, path)]
    if len(spec.slots) == 1 and spec.slots[0].variadic and len(unit.children) > spec.slots[0].min_count:
      options += [("drop", path, j) for j in range(len(unit.children))]

  def make(option):
    how, path, j = option
    unit = tree.get(path)
    child = unit.children[j]
    if how == "collapse":
      return tree.replace(path, child), f"collapse {unit.kind} {_where(path)} to its child {child.render()}"
    rest = unit.children[:j] + unit.children[j + 1:]
    return tree.replace(path, unit.with_children(rest)), f"drop {child.render()} from {unit.kind} {_where(path)}"
  return _first(_rng(key), options, make, [tree], bounds)


def mutate_swap(key: jax.Array, tree: Unit, bounds: Bounds = Bounds()) -> tuple[Unit, str] | None:
  """Swap two different children of a combinator (each must fit the other's slot)."""
  tree = registry.normalize(tree)
  options = []
  for path, unit in tree.walk():
    slots = registry.slot_of_children(_spec(unit), len(unit.children))
    roles = [_spec(c).role for c in unit.children]
    options += [(path, i, j) for i in range(len(slots)) for j in range(i + 1, len(slots))
                if unit.children[i] != unit.children[j]
                and roles[i] in slots[j].roles and roles[j] in slots[i].roles]

  def make(option):
    path, i, j = option
    unit = tree.get(path)
    kids = list(unit.children)
    kids[i], kids[j] = kids[j], kids[i]
    return (tree.replace(path, unit.with_children(kids)),
            f"swap {kids[j].kind} and {kids[i].kind} (children {i}, {j}) of {unit.kind} {_where(path)}")
  return _first(_rng(key), options, make, [tree], bounds)


MUTATIONS: dict[str, Operator] = {
    "hparam": mutate_hparam, "replace": mutate_replace, "insert": mutate_insert,
    "delete": mutate_delete, "swap": mutate_swap}


def mutate(key: jax.Array, tree: Unit, bounds: Bounds = Bounds()) -> tuple[Unit, str]:
  """One mutation: the kinds are tried in a key-drawn order; the description is `name: change`."""
  k_order, k_apply = jax.random.split(key)
  names = list(MUTATIONS)
  for i in _rng(k_order).permutation(len(names)):
    out = MUTATIONS[names[int(i)]](k_apply, tree, bounds)
    if out is not None:
      return out[0], f"{names[int(i)]}: {out[1]}"
  raise ValueError(f"no acceptable mutation of {tree.render()} within {bounds}")


# -- crossover ----------------------------------------------------------------------------------
def crossover_exchange(key: jax.Array, parents: Sequence[Unit], bounds: Bounds = Bounds()
                       ) -> tuple[Unit, str] | None:
  """Put a subtree of one of the first two parents in place of a role-compatible non-root subtree
  of the other (the receiver, either parent)."""
  pair = [registry.normalize(p) for p in parents[:2]]
  options = [(r, pr, pd) for r in range(len(pair)) for pr, unit in pair[r].walk() if pr
             for pd, donated in pair[1 - r].walk()
             if _spec(donated).role in _slot_roles(pair[r], pr) and donated != unit]

  def make(option):
    r, pr, pd = option
    donated = pair[1 - r].get(pd)
    return (pair[r].replace(pr, donated),
            f"parent {r} {_where(pr)} <- {donated.render()} from parent {1 - r} {_where(pd)}")
  return _first(_rng(key), options, make, pair, bounds) if len(pair) == 2 else None


def crossover_recombine(key: jax.Array, parents: Sequence[Unit], bounds: Bounds = Bounds(),
                        max_tries: int = 8) -> tuple[Unit, str] | None:
  """A new root: one parent's root unit, each of its child slots filled by the child at the same
  position of some parent (whichever fits the slot); the root and the slots come from at least two
  parents."""
  parents = [registry.normalize(p) for p in parents]
  rng = _rng(key)
  options = [t for t, p in enumerate(parents) if p.children] if len(parents) >= 2 else []

  def make(t):
    root = parents[t]
    slots = registry.slot_of_children(_spec(root), len(root.children))
    donors = [[k for k, p in enumerate(parents) if len(p.children) > i and _spec(p.children[i]).role in s.roles]
              for i, s in enumerate(slots)]
    for _ in range(max_tries):
      picks = [_choice(rng, d) for d in donors]
      child = root.with_children([parents[k].children[i] for i, k in enumerate(picks)])
      if len(set(picks) | {t}) >= 2 and child not in parents:
        return child, f"{root.kind} root of parent {t}, children from parents {picks}"
    return None
  return _first(rng, options, make, parents, bounds)


CROSSOVERS: dict[str, Operator] = {"exchange": crossover_exchange, "recombine": crossover_recombine}


def crossover(key: jax.Array, parents: Sequence[Unit], bounds: Bounds = Bounds()) -> tuple[Unit, str] | None:
  """One crossover of `parents` (>= 2), its kind drawn from the key; None if none is possible."""
  k_order, k_apply = jax.random.split(key)
  names = list(CROSSOVERS)
  for i in _rng(k_order).permutation(len(names)):
    out = CROSSOVERS[names[int(i)]](k_apply, parents, bounds)
    if out is not None:
      return out[0], f"{names[int(i)]}: {out[1]}"
  return None


# -- proposals ----------------------------------------------------------------------------------
def choose_mode(key: jax.Array, mode_probs: dict[str, float] | None = None, n_verified: int = 0,
                n_parents: int = 2) -> str:
  """Scratch, mutation or crossover by `mode_probs` (default MODE_PROBS); crossover needs >= 2
  verified designs and >= 2 parents, mutation a parent; the rest is renormalised."""
  probs = {**MODE_PROBS, **dict(mode_probs or {})}
  if n_verified < 2 or n_parents < 2:
    probs["crossover"] = 0.0
  if n_parents < 1:
    probs["mutation"] = 0.0
  names = [n for n in MODE_PROBS if float(probs[n]) > 0]
  if not names:
    raise ValueError(f"mode probabilities {probs} leave no mode for {n_parents} parents, {n_verified} verified")
  p = np.array([float(probs[n]) for n in names])
  i = int(np.searchsorted(np.cumsum(p / p.sum()), _rng(key).random(), side="right"))
  return names[min(i, len(names) - 1)]


def propose(key: jax.Array, parents: Sequence[Unit], mode_probs: dict[str, float] | None = None,
            n_verified: int = 0, bounds: Bounds = Bounds(), mode: str | None = None) -> tuple[Unit, str, str]:
  """A child of `parents` (best first): `(child, mode, description)`.

  The mode is `mode` if given, else drawn by `choose_mode` from the first half of the key (so a
  caller may draw it first, select as many parents as it needs, then pass it in). A crossover
  that finds no acceptable child falls back to mutating `parents[0]`, and a mutation to scratch;
  the mode returned is the one that made the child.
  """
  k_mode, k_op = jax.random.split(key)
  mode = mode or choose_mode(k_mode, mode_probs, n_verified, len(parents))
  if mode == "crossover":
    out = crossover(k_op, parents, bounds)
    if out is not None:
      return out[0], "crossover", out[1]
    mode = "mutation"
  if mode == "mutation" and parents:
    try:
      child, description = mutate(k_op, parents[0], bounds)
      return child, "mutation", description
    except ValueError:
      pass
  child, description = scratch(k_op, bounds, avoid=parents)
  return child, "scratch", f"scratch: {description}"
