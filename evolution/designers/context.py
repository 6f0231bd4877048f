"""What a designer sees of the run: the mode, the parents, their code, siblings, similar proposals,
and where a child is checked (the checker's config and the rung, for the sandbox)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from gab.tree import Unit, design_from_json, design_units


@dataclasses.dataclass
class Context:
  mode: str                                 # mutation | crossover | scratch
  parents: list[dict[str, Any]]             # store rows of the parents (empty for scratch)
  trees: list[Unit]
  sources: dict[str, str]                   # kind -> source of every code unit the parents use
  checker_cfg: dict[str, Any]
  rung: dict[str, Any]
  known: set[str]                           # canonical ids already in the store
  siblings: list[str]                       # renderings of other children of the parents
  similar: list[str]                        # the most similar earlier proposals
  results: list[str]                        # one line of results per parent
  stored_units: dict[str, str]              # every code unit in the store, reusable by the planner
  fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)  # function hash -> design
  histories: list[str] = dataclasses.field(default_factory=list)  # per parent: its proposal, review


def _words(text: str) -> set[str]:
  return set(re.findall(r"[a-z0-9]+", text.lower()))


def similar_proposals(store: Any, text: str, n: int = 3) -> list[str]:
  """The `n` earlier proposals closest to `text` by word overlap (Jaccard), best first."""
  words = _words(text)
  scored = []
  for art in store.artifacts(kind="proposal"):
    p = json.loads(art["content"])
    other = f"{p.get('title', '')} {p.get('abstract', '')}"
    union = words | _words(other)
    score = len(words & _words(other)) / len(union) if union else 0.0
    scored.append((-score, art["created_seq"], f"{p.get('title')}: {p.get('abstract')}"))
  return [s for _, _, s in sorted(scored)[:n]]


def history(store: Any, design_id: str) -> str:
  """The proposal and the last review that produced a design (empty for GP designs and seeds)."""
  proposals = store.artifacts(design_id=design_id, kind="proposal")
  if not proposals:
    return ""
  p = json.loads(proposals[-1]["content"])
  text = f"Its proposal: {p.get('title')}: {p.get('abstract')} Motivation: {p.get('motivation')}"
  reviews = store.artifacts(design_id=design_id, kind="reviews")
  last = json.loads(reviews[-1]["content"])[-1:] if reviews else []
  if last:
    text += f"\nIts review ({last[0]['rating']}/5): {last[0]['review']}"
  return text


def build(store: Any, mode: str, parents: list[dict[str, Any]], checker_cfg: dict[str, Any],
          rung: dict[str, Any], known: set[str], rungs: list[str]) -> Context:
  trees, sources, siblings, results, histories = [], {}, [], [], []
  metrics = store.metrics_by_design(rungs)
  for p in parents:
    trees.append(design_from_json(p["tree"])[0])
    sources.update(design_units(p["tree"]))
    histories.append(history(store, p["id"]))
    got = {r: m["val_bpb"] for r, m in metrics.get(p["id"], {}).items()}
    results.append(f"{p['id']}: validation bits per byte " +
                   (", ".join(f"{r} {got[r]:.4f}" for r in rungs if got.get(r) is not None) or "none yet"))
    for child_id in store.children(p["id"])[-2:]:
      child = store.design(child_id)
      siblings.append(f"{child_id} ({child['operator']}: {child['description']}; {child['status']})")
  stored = {u["kind"]: u["source"] for u in store.code_units()}
  text = " ".join(f"{p['description']}" for p in parents) or mode
  fingerprints = {a["content"]: a["design_id"] for a in store.artifacts(kind="fingerprint")}
  return Context(mode, parents, trees, sources, checker_cfg, rung, known, siblings,
                 similar_proposals(store, text), results, stored, fingerprints, histories)
