"""What the report shows, read from a run's workdir: designs, results per rung, lineage, totals."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from typing import Any

from evolution.store import Store
from genesys_jax import ladder, leaderboard

_TEXT_ARTIFACTS = ("proposal", "review", "transcript", "plan", "observation")


@dataclasses.dataclass
class Run:
  workdir: str
  config: dict[str, Any]
  rungs: list[str]
  designs: list[dict[str, Any]]                 # creation order, each with "metrics" {rung: {...}}
  boards: dict[str, list[dict[str, Any]]]        # leaderboard.by_rung
  lineage: list[dict[str, Any]]
  artifacts: dict[str, list[dict[str, Any]]]     # design id -> text artifacts worth showing
  known_at: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # see known_at()
  overview: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # leaderboard.overview

  @property
  def by_id(self) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in self.designs}


def load(workdir: str, store: Store) -> Run:
  path = os.path.join(workdir, "config.json")
  config = json.load(open(path)) if os.path.exists(path) else {}
  rungs = list(config.get("ladder", {}).get("rungs") or sorted({v["rung"] for v in store.verifications()}))
  metrics = store.metrics_by_design(rungs)
  designs = [{**d, "metrics": metrics.get(d["id"], {})} for d in store.designs()]
  artifacts: dict[str, list[dict[str, Any]]] = {}
  for a in store.artifacts():
    if a["design_id"] and any(a["kind"].startswith(k) for k in _TEXT_ARTIFACTS):
      artifacts.setdefault(a["design_id"], []).append(a)
  return Run(workdir, config, rungs, designs, leaderboard.by_rung(store, rungs), store.lineage(), artifacts,
             known_at(store), leaderboard.overview(store, rungs))


def known_at(store: Store) -> dict[tuple[str, str], int]:
  """(design id, rung) -> how many proposals had been made when that result was recorded (its
  last record): a design promoted after proposal 9 is known at the higher rung from 9 on, not
  from its own proposal."""
  events = sorted(store.events(kind="design_added") + store.events(kind="verification_added"),
                  key=lambda e: e["seq"])
  proposals, out = 0, {}
  for e in events:
    if e["kind"] == "design_added":
      proposals += e["payload"]["operator"] != "seed"
    else:
      out[(e["payload"]["design_id"], e["payload"]["rung"])] = proposals
  return out


def counts(run: Run) -> dict[str, dict[str, int]]:
  """Designs by status, by operator and by designer (GP operators unless a design names one)."""
  out: dict[str, dict[str, int]] = {"status": {}, "operator": {}, "designer": {}}
  for d in run.designs:
    designer = json.loads(d["tree"]).get("designer") or ("seed" if d["operator"] == "seed" else "gp")
    for field, value in (("status", d["status"]), ("operator", d["operator"]), ("designer", designer)):
      out[field][value] = out[field].get(value, 0) + 1
  return out


def totals(run: Run) -> dict[str, Any]:
  """Training time, tokens and model FLOPs over every verification."""
  wall = tokens = flops = 0.0
  n = 0
  for d in run.designs:
    for m in d["metrics"].values():
      if m.get("val_bpb") is None:
        continue
      n += 1
      wall += m.get("train_wall_s") or 0.0
      tokens += m.get("tokens") or 0
      flops += (m.get("flops_per_token") or 0.0) * (m.get("tokens") or 0)
  return {"verifications": n, "train_wall_s": wall, "tokens": int(tokens), "flops": flops}


def funnel(run: Run) -> list[dict[str, Any]]:
  """Per rung: the ladder's promotion slots for discovered designs (None at the lowest rung, which
  verifies every valid design), and the discovered and baseline verifications there."""
  lad = run.config.get("ladder", {})
  n_target, ratio = lad.get("n_target", 1), lad.get("ratio", 0.5)
  budget = ladder.budgets(len(run.rungs), n_target, ratio) if run.rungs else []
  out = []
  for i, r in enumerate(run.rungs):
    rows = run.boards[r]
    out.append({"rung": r, "budget": budget[i] if i else None,
                "discovered": sum(not x["is_seed"] for x in rows),
                "baselines": sum(x["is_seed"] for x in rows),
                "failed": sum(x["val_bpb"] is None for x in rows)})
  return out


def best_so_far(run: Run, rung: str) -> tuple[list[int], list[float | None]]:
  """For each number of proposals k (1-based), the best val_bpb at `rung` of a discovered design
  whose result there had been recorded when the k-th proposal was made (`known_at`; results
  recorded after the last proposal count at the last)."""
  proposals = [d for d in run.designs if d["operator"] != "seed"]
  results = []  # (k, val_bpb)
  for own, d in enumerate(proposals, 1):
    bpb = d["metrics"].get(rung, {}).get("val_bpb")
    if bpb is not None:
      results.append((max(own, run.known_at.get((d["id"], rung), own)), bpb))
  xs, ys, best = [], [], None
  for k in range(1, len(proposals) + 1):
    best = min([bpb for at, bpb in results if at == k] + ([best] if best is not None else []),
               default=None)
    xs.append(k)
    ys.append(best)
  return xs, ys


def lowest_bpb(d: dict[str, Any], rungs: list[str]) -> float | None:
  """The design's val_bpb at the lowest rung where it has one (a measurement, comparable across
  designs: every valid design is trained there; what the tree is coloured by). Selection's fitness
  is `evolution.selection.fitness`."""
  for r in rungs:
    bpb = d["metrics"].get(r, {}).get("val_bpb")
    if bpb is not None and math.isfinite(bpb):
      return bpb
  return None


def generations(run: Run) -> dict[str, int]:
  """0 for designs without stored parents, else 1 + the deepest parent's generation."""
  parents: dict[str, list[str]] = {}
  for e in run.lineage:
    parents.setdefault(e["child_id"], []).append(e["parent_id"])
  gen: dict[str, int] = {}
  for d in run.designs:  # creation order: parents come first
    ps = [gen[p] for p in parents.get(d["id"], []) if p in gen]
    gen[d["id"]] = 1 + max(ps) if ps else 0
  return gen


def tree_of(d: dict[str, Any]) -> dict[str, Any]:
  return json.loads(d["tree"])["tree"]


def diff_from_parent(run: Run, d: dict[str, Any]) -> list[tuple[str, str]]:
  """(class, line) of a unified diff of the first parent's unit tree to this one's."""
  if not d["parents"] or d["parents"][0] not in run.by_id:
    return []
  old = json.dumps(tree_of(run.by_id[d["parents"][0]]), indent=1, sort_keys=True).splitlines()
  new = json.dumps(tree_of(d), indent=1, sort_keys=True).splitlines()
  out = []
  for line in difflib.unified_diff(old, new, "parent", "child", n=2, lineterm=""):
    cls = ("diff-add" if line.startswith("+") and not line.startswith("+++") else
           "diff-del" if line.startswith("-") and not line.startswith("---") else "")
    out.append((cls, line))
  return out


def code_units(node: dict[str, Any], path: str = "") -> list[tuple[str, str, str]]:
  """(path, kind, source) of every unit in the tree that carries code (a string field `code` or
  `source` among its own fields or hyperparameters)."""
  out = []
  for where in (node, node.get("params") or {}):
    for field in ("code", "source"):
      if isinstance(where.get(field), str):
        out.append((path or "root", node.get("kind", "?"), where[field]))
  for i, child in enumerate(node.get("children") or []):
    out += code_units(child, f"{path}/{i}" if path else str(i))
  return out
