"""Crossover: a child combining two or more parents (`CROSSOVERS`, drawn by `crossover`)."""

from __future__ import annotations

from typing import Sequence

import jax

from evolution.typing_rules import Bounds, Operator, _choice, _first, _rng, _slot_roles, _spec, _where, first_operator
from gab import registry
from gab.tree import Unit


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
  return first_operator(key, CROSSOVERS, parents, bounds)
