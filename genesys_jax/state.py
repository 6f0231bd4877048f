"""The run's state: what proposing and promoting read, kept beside the store.

`RunState` holds, for every stored design, its selection row (id, operator, parents, description,
status, is_seed and its metrics per rung; never its tree), the canonical ids of every design (what a
new child must differ from), the functional fingerprints of the valid ones (what a child must not
compute again), the islands and the proposal counter. It is built once from the store (`load`: the
canonical ids come from the store's `canonical` column, so no tree is parsed for them) and then
changed only by `genesys_jax/record.py`, in the same step as the store, so the two never disagree.
A proposal reads its parents' trees and nothing else from the store (`Trees`): its cost does not
grow with the number of stored designs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from evolution import canonical, islands as isl
from gab.tree import Unit, design_from_json
from genesys_jax import islands


class Trees:
  """Design trees by id, read from the store and parsed once each (counted: `read`, `parsed`)."""

  def __init__(self, store: Any):
    self.store = store
    self._trees: dict[str, Unit] = {}
    self.read = self.parsed = 0

  def row(self, design_id: str) -> dict[str, Any]:
    """The design's store row (with its tree JSON)."""
    self.read += 1
    return self.store.design(design_id)

  def __call__(self, design_id: str) -> Unit:
    if design_id not in self._trees:
      self.parsed += 1
      self._trees[design_id] = design_from_json(self.row(design_id)["tree"])[0]
    return self._trees[design_id]


@dataclasses.dataclass
class RunState:
  config: ml_collections.ConfigDict          # resolved (genesys_jax/resolve.py)
  key: jax.Array                             # key(config.seed): every stream's root (evolution/streams.py)
  rungs: tuple[str, ...]                     # the ladder, lowest first
  designs: dict[str, dict[str, Any]]         # id -> selection row, in creation order
  known: set[str]                            # canonical ids of every stored design
  fingerprints: dict[str, list[str]]         # fingerprint -> ids of the designs that compute it
  islands: isl.Islands | None                # None without islands
  proposals_done: int
  trees: Trees

  @property
  def n_islands(self) -> int:
    return self.config.evolution.islands

  def pool(self) -> list[dict[str, Any]]:
    """The designs parents are selected from: those with a result at some rung, in creation order;
    never a leaking one (its trained parameters failed `gab.audit`)."""
    return [d for d in self.designs.values() if d["status"] != "leaking"
            and any(m.get("val_bpb") is not None for m in d["metrics"].values())]

  def twin(self, design_id: str, fingerprint: str | None) -> str | None:
    """Another stored design computing the function `fingerprint` names (None: none, or no fp)."""
    return next((d for d in self.fingerprints.get(fingerprint, ()) if d != design_id), None)


def row(design: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
  """A design's selection row (`evolution.selection`'s dict): its store row without tree and report."""
  return {"id": design["id"], "operator": design["operator"], "parents": list(design["parents"]),
          "description": design["description"], "status": design["status"],
          "canonical": design["canonical"], "is_seed": design["operator"] == "seed",
          "metrics": dict(metrics)}


def load(config: ml_collections.ConfigDict, store: Any) -> tuple[RunState, dict[str, str]]:
  """(the state of the run in `store`, {design id: canonical id} of rows stored without one: parsed
  here once, for `record.index` to keep). Code units must be declared first (their trees parse)."""
  rungs = tuple(config.ladder.rungs)
  metrics = store.metrics_by_design(rungs)
  designs, known, missing = {}, set(), {}
  for d in store.designs():
    if d["canonical"] is None:
      d = {**d, "canonical": canonical.canonical_id(design_from_json(d["tree"])[0])}
      missing[d["id"]] = d["canonical"]
    designs[d["id"]] = row(d, metrics.get(d["id"], {}))
    known.add(d["canonical"])
  fingerprints: dict[str, list[str]] = {}
  for art in store.artifacts(kind="fingerprint"):
    fingerprints.setdefault(art["content"], []).append(art["design_id"])
  n = config.evolution.islands
  state = RunState(config, jax.random.key(config.seed), rungs, designs, known, fingerprints,
                   islands.load(store, n) if n else None, store.get_meta("proposals_done", 0),
                   Trees(store))
  return state, missing

