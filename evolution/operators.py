"""GP operators: pure functions of a `jax.random` key and parent trees that return a child tree.

Every operator returns `(child, description)` where `description` says in a few words what changed,
and only ever produces trees that obey the registry's types (`registry.type_errors(child) == []`).
Choices are drawn from the key alone, over lists whose order is fixed by the tree and the registry.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from gab import registry
from gab.registry import KindSpec
from gab.tree import Path, Unit

Operator = Callable[[jax.Array, Unit], "tuple[Unit, str] | None"]


def _rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded from a jax key, for discrete choices over Python lists."""
  seed = np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist()
  return np.random.default_rng(seed)


def _where(path: Path) -> str:
  return f"at {list(path)}"


def default_unit(spec: KindSpec, rng: np.random.Generator, leaf_roles=(registry.MIXER, registry.CHANNEL,
                                                                        registry.NORM)) -> Unit:
  """A fresh unit of `spec` with default hyperparameters; combinators get random leaf children."""
  children = []
  for slot in spec.slots:
    count = slot.min_count
    for _ in range(count):
      options = [s for s in registry.kinds_with_role(leaf_roles) if s.role in slot.roles and s.is_leaf]
      children.append(default_unit(options[rng.integers(len(options))], rng))
  return registry.normalize(Unit.make(spec.name, children))


def mutate_hparam(key: jax.Array, tree: Unit) -> tuple[Unit, str] | None:
  """Change one hyperparameter to another value in its domain."""
  rng = _rng(key)
  sites = []
  for path, unit in tree.walk():
    for p in registry.get(unit.kind).params:
      if len(p.domain) > 1:
        sites.append((path, unit, p))
  if not sites:
    return None
  path, unit, p = sites[rng.integers(len(sites))]
  old = registry.hparam(unit, p.name)
  new = [v for v in p.domain if v != old][rng.integers(len(p.domain) - 1)]
  child = tree.replace(path, unit.with_params(**{p.name: new}))
  return child, f"{unit.kind} {_where(path)}: {p.name} {old} -> {new}"


def mutate_replace(key: jax.Array, tree: Unit) -> tuple[Unit, str] | None:
  """Replace a leaf unit by a fresh unit of another kind with the same role."""
  rng = _rng(key)
  sites = []
  for path, unit in tree.walk():
    spec = registry.get(unit.kind)
    if spec.is_leaf:
      others = [s for s in registry.kinds_with_role((spec.role,)) if s.name != unit.kind and s.is_leaf]
      if others:
        sites.append((path, unit, others))
  if not sites:
    return None
  path, unit, others = sites[rng.integers(len(sites))]
  new = default_unit(others[rng.integers(len(others))], rng)
  return tree.replace(path, new), f"{unit.kind} {_where(path)} -> {new.render()}"


def mutate_insert(key: jax.Array, tree: Unit) -> tuple[Unit, str] | None:
  """Wrap a non-root subtree in Residual, Gate or Parallel with a new sibling."""
  rng = _rng(key)
  sites = [(path, unit) for path, unit in tree.walk() if path]
  if not sites:
    return None
  path, unit = sites[rng.integers(len(sites))]
  wrapper = ("Residual", "Gate", "Parallel")[rng.integers(3)]
  leaves = [s for s in registry.kinds_with_role((registry.MIXER, registry.CHANNEL)) if s.is_leaf]
  sibling = default_unit(leaves[rng.integers(len(leaves))], rng)
  children = [unit] if wrapper == "Residual" else [unit, sibling]
  new = registry.normalize(Unit.make(wrapper, children))
  parent = tree.get(path[:-1])
  slot = registry.slot_of_children(registry.get(parent.kind), len(parent.children))[path[-1]]
  if registry.BLOCK not in slot.roles:
    return None
  extra = "" if wrapper == "Residual" else f" with {sibling.render()}"
  return tree.replace(path, new), f"wrap {unit.kind} {_where(path)} in {wrapper}{extra}"


MUTATIONS: dict[str, Operator] = {
    "hparam": mutate_hparam, "replace": mutate_replace, "insert": mutate_insert}


def mutate(key: jax.Array, tree: Unit, max_tries: int = 16) -> tuple[Unit, str]:
  """One mutation, its kind drawn from the key; retries (with split keys) until the tree changes."""
  names = list(MUTATIONS)
  for attempt in range(max_tries):
    k_op, k_apply = jax.random.split(jax.random.fold_in(key, attempt))
    name = names[int(jax.random.randint(k_op, (), 0, len(names)))]
    out = MUTATIONS[name](k_apply, tree)
    if out is not None and out[0] != tree and not registry.type_errors(out[0]):
      return out[0], f"{name}: {out[1]}"
  raise ValueError(f"no mutation of {tree.render()} found in {max_tries} tries")
