"""Scratch growth: random well-typed subtrees (`grow`) and whole random blocks (`scratch`).

`grow` also makes the new subtrees of the `replace` and `insert` mutations.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from evolution.typing_rules import Bounds, _choice, _count, _first, _kinds, _positions, _rng
from gab.registry import BLOCK, MIXER, KindSpec
from gab.tree import Unit

COMBINATOR_PROB = 0.7     # growth picks a combinator at depth d with probability 0.7 ** (d + 1)


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
