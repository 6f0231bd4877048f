"""The loop's islands option (`evolution.islands = N > 0`), over `evolution/islands.py`.

Each proposal draws an island, selects parents only from that island's pool (residents and
guests), and the child lives on that island (as in funsearch, where a program joins the island
that produced it; a child of a migrant guest thus stays with the island that bred it).
Every seed lives on island i mod N and is a guest on all the others, so every island starts from
the seeds. Every `evolution.migrate_every` proposals the weaker islands receive the best design of a
stronger one, ranked by `evolution.selection.fitness` at the lowest rung (where every design is
measured) on validation bpb alone. The islands are kept as JSON in the store's meta table, written
in the same transaction as the design they place, so a resumed run continues with the same islands.
The island of a proposal and each migration draw from their own streams (evolution/streams.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax

from evolution import islands as isl
from evolution import selection, streams

_META = "islands"


def load(store: Any, n: int) -> isl.Islands:
  text = store.get_meta(_META)
  return isl.Islands.from_json(text) if text else isl.create(n)


def save(store: Any, islands: isl.Islands) -> None:
  store.set_meta(_META, islands.to_json())


def add_seed(islands: isl.Islands, design_id: str) -> isl.Islands:
  if islands.home(design_id) is not None:
    return islands
  n_seeds = sum(len(r) for r in islands.residents)
  home = n_seeds % islands.n
  residents = list(islands.residents)
  residents[home] += (design_id,)
  guests = [g + (design_id,) if i != home else g for i, g in enumerate(islands.guests)]
  return dataclasses.replace(islands, residents=tuple(residents), guests=tuple(guests))


def add_child(islands: isl.Islands, design_id: str, parents: Sequence[str], island: int) -> isl.Islands:
  """The child lives on the island that proposed it (its parents came from that island's pool)."""
  del parents
  if islands.home(design_id) is not None:
    return islands
  residents = list(islands.residents)
  residents[island] += (design_id,)
  return dataclasses.replace(islands, residents=tuple(residents))


def choose(run_key: jax.Array, index: int, islands: isl.Islands, designer_drawn: bool) -> int:
  """The island proposal `index` comes from (`designer_drawn`: the run is designer.kind=mixed)."""
  return isl.choose_island(streams.island(run_key, index, designer_drawn), islands)


def restrict(pool: list[dict[str, Any]], islands: isl.Islands, island: int) -> list[dict[str, Any]]:
  ids = set(islands.pool(island))
  return [d for d in pool if d["id"] in ids]


def after_proposal(run_key: jax.Array, islands: isl.Islands, n_done: int, interval: int,
                   designs: list[dict[str, Any]], rung: str) -> isl.Islands:
  """Migrate if one is due after proposal `n_done` (1-based)."""
  if not isl.due(n_done, interval):
    return islands
  fitness = selection.fitness(designs, [rung], zeroshot_weight=0.0)
  return isl.migrate(streams.of_run(run_key, "migration", n_done), islands, fitness)
