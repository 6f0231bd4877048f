"""The one definition of the Z read-before-write rule, shared by the checker's format check
(`gab.checks.structure.z_flow_errors`) and the GP operators (`evolution.typing_rules.violations`).

A pre-order walk is the execution order of every combinator (children run in order, Z threaded
through them); the LM provides the entries of `gab.model.initial_z`. Blocks run one after another
and an entry written in block i stays readable in block i + 1, so the first block is the strictest:
a design obeys the rule iff, in one walk, every entry a unit reads is provided by the LM or written
by a unit before it.
"""

from __future__ import annotations

import functools

import numpy as np

from gab import registry
from gab.model import initial_z
from gab.tree import Path, Unit


@functools.cache
def lm_provided() -> tuple[str, ...]:
  """The Z entries the LM gives every block."""
  return tuple(sorted(initial_z(np.zeros((1, 1), np.int32))))


def reads_before_writes(tree: Unit) -> list[tuple[Path, Unit, list[str]]]:
  """(path, unit, entries) for each unit that reads Z entries nothing has written before it."""
  available = set(lm_provided())
  out = []
  for path, unit in tree.walk():
    spec = registry.get(unit.kind)
    missing = [name for name in spec.reads if name not in available]
    if missing:
      out.append((path, unit, missing))
    available.update(spec.writes)
  return out
