"""Islands: separate sub-populations that evolve apart and periodically share their best designs.

After funsearch's programs database (google-deepmind/funsearch `implementation/programs_database.py`):
each island evolves on its own, which keeps several lines of designs alive instead of one; every
`interval` proposals the weaker islands receive the best design of a stronger one.

Every design lives on exactly one island, its home: where its first parent lives, and for designs
without a parent in the islands (seeds, scratch designs), the island with the fewest residents.
Migration *copies* a design: the copy joins the receiving island's `guests`, which its designers
may select as parents just like residents, while the design keeps its one home. `Islands` is an
immutable value (tuples of ids in arrival order); every operation returns a new one, and every
random choice comes from an explicit key, so a run is reproducible and its islands can be kept as
JSON in the store's meta table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Mapping, Sequence

import jax


@dataclasses.dataclass(frozen=True)
class Islands:
  residents: tuple[tuple[str, ...], ...]   # per island: the designs whose home it is
  guests: tuple[tuple[str, ...], ...]      # per island: copies of other islands' designs

  @property
  def n(self) -> int:
    return len(self.residents)

  def home(self, design_id: str) -> int | None:
    for i, ids in enumerate(self.residents):
      if design_id in ids:
        return i
    return None

  def pool(self, island: int) -> list[str]:
    """The designs island `island` selects parents from: residents, then guests."""
    return list(self.residents[island]) + list(self.guests[island])

  def to_json(self) -> str:
    return json.dumps({"residents": [list(r) for r in self.residents],
                       "guests": [list(g) for g in self.guests]})

  @classmethod
  def from_json(cls, text: str) -> "Islands":
    doc = json.loads(text)
    return cls(tuple(tuple(r) for r in doc["residents"]), tuple(tuple(g) for g in doc["guests"]))


def create(n_islands: int) -> Islands:
  if n_islands < 1:
    raise ValueError(f"n_islands must be >= 1, got {n_islands}")
  return Islands(((),) * n_islands, ((),) * n_islands)


def add(islands: Islands, design_id: str, parent_ids: Sequence[str] = ()) -> Islands:
  """Give `design_id` its home: its first placed parent's island, else the least populated one
  (lowest index on a tie). A design already placed keeps its home."""
  if islands.home(design_id) is not None:
    return islands
  homes = [islands.home(p) for p in parent_ids]
  placed = [h for h in homes if h is not None]
  if placed:
    target = placed[0]
  else:
    sizes = [len(r) for r in islands.residents]
    target = sizes.index(min(sizes))
  residents = list(islands.residents)
  residents[target] = residents[target] + (design_id,)
  return dataclasses.replace(islands, residents=tuple(residents))


def choose_island(key: jax.Array, islands: Islands) -> int:
  """A uniformly drawn island among those with designs to select from (any island if none has)."""
  options = [i for i in range(islands.n) if islands.pool(i)] or list(range(islands.n))
  return options[int(jax.random.randint(key, (), 0, len(options)))]


def best_of(islands: Islands, island: int, fitness: Mapping[str, float | None]) -> str | None:
  """The fittest design in the island's pool (first in pool order on a tie); None if unscored."""
  scored = [d for d in islands.pool(island) if fitness.get(d) is not None]
  if not scored:
    return None
  return scored[max(range(len(scored)), key=lambda i: (fitness[scored[i]], -i))]


def migrate(key: jax.Array, islands: Islands, fitness: Mapping[str, float | None],
            fraction: float = 0.5) -> Islands:
  """Copy best designs from strong islands to weak ones.

  Islands are ranked by the fitness of their best design (an island with none scored ranks last;
  ties by index). Each of the weakest floor(fraction x n) islands receives, as a guest, the best
  design of an island drawn uniformly from the stronger ones (unless it already holds that design).
  """
  bests = [best_of(islands, i, fitness) for i in range(islands.n)]
  strength = [(-math.inf if b is None else fitness[b]) for b in bests]
  order = sorted(range(islands.n), key=lambda i: (-strength[i], i))
  n_weak = int(math.floor(fraction * islands.n))
  n_strong = islands.n - n_weak
  donors = [i for i in order[:n_strong] if bests[i] is not None]
  guests = list(islands.guests)
  if not donors:
    return islands
  for k, weak in enumerate(order[n_strong:]):
    donor = donors[int(jax.random.randint(jax.random.fold_in(key, k), (), 0, len(donors)))]
    migrant = bests[donor]
    if migrant not in islands.pool(weak):
      guests[weak] = guests[weak] + (migrant,)
  return dataclasses.replace(islands, guests=tuple(guests))


def due(n_proposals: int, interval: int) -> bool:
  """Whether a migration follows proposal number `n_proposals` (1-based) at this interval."""
  return interval > 0 and n_proposals > 0 and n_proposals % interval == 0
