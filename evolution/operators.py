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

Scratch growth lives in `evolution/growth.py`, crossover in `evolution/crossover.py` and the
shared acceptability rules (`Bounds`, `violations`) in `evolution/typing_rules.py`; this module
holds the mutations and `propose`, and re-exports the rest as the public entry point.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from evolution.crossover import CROSSOVERS, crossover, crossover_exchange, crossover_recombine  # noqa: F401
from evolution.growth import COMBINATOR_PROB, grow, random_unit, scratch  # noqa: F401
from evolution.typing_rules import (  # noqa: F401
    Bounds, Operator, _choice, _first, _kinds, _n_mixers, _positions, _rng, _slot_roles, _spec, _where,
    first_operator, violations)
from gab import registry
from gab.registry import BLOCK
from gab.tree import Unit

MODE_PROBS = {"scratch": 0.05, "mutation": 0.75, "crossover": 0.20}
SIBLING_MAX_SIZE = 3      # the largest new sibling `insert` grows


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
  out = first_operator(key, MUTATIONS, tree, bounds)
  if out is None:
    raise ValueError(f"no acceptable mutation of {tree.render()} within {bounds}")
  return out


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
