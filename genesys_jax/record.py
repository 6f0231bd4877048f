"""Where the stages' records meet the store: every write the loop makes to a run's history.

The stages (genesys_jax/propose.py, check.py, verify.py) return records and write nothing; the
controller (genesys_jax/loop.py) and the verifier workers (genesys_jax/jobs.py) hand them to the
functions here. Each is one store transaction, and the controller's also update the run state
(genesys_jax/state.py) once that transaction has committed, so the state and the store never
disagree. (The job queue's claims, heartbeats and releases are the queue's protocol, in
genesys_jax/jobs.py and genesys_jax/loop.py; the LLM designers' recorder keeps each API call as it is
made, so that money spent is on record even when a design is abandoned.)
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from evolution import canonical
from evolution.store import CHECK_JOB, Store
from gab import checker, codeunits
from gab.tree import Unit, design_to_json
from genesys_jax import islands
from genesys_jax.check import Verdict
from genesys_jax.propose import Proposal
from genesys_jax.state import RunState, row
from genesys_jax.verify import Failure, Leaking, Verification


def index(store: Store, missing: dict[str, str]) -> None:
  """Keep the canonical ids `state.load` computed for rows stored before schema 4."""
  store.set_canonical(missing)


def code_units(store: Store, kinds: Iterable[str], design_id: str | None) -> None:
  """Keep declared code units (the first design that uses a unit introduces it; None: a hand-written
  unit of config.units.files)."""
  for kind in kinds:
    unit = codeunits.unit(kind)
    store.add_code_unit(kind, unit.source, unit.declaration, design_id)


def _design(store: Store, tree: Unit, name: str | None, units: dict[str, str], parents, operator: str,
            description: str, status: str, report: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
  """(id, selection row, None if it was stored already) of a design stored with its code units."""
  cid = tree.content_hash()
  doc = design_to_json(tree, name, units or codeunits.sources_for(tree))
  if not store.add_design(cid, doc, list(parents), operator, description, status, report,
                          canonical.canonical_id(tree)):
    return cid, None
  code_units(store, codeunits.kinds_in(tree), cid)
  return cid, row(store.design(cid), {})


def _learn_design(state: RunState, new: dict[str, Any], fingerprint: str | None) -> None:
  state.designs[new["id"]] = new
  state.known.add(new["canonical"])
  if fingerprint is not None:
    state.fingerprints.setdefault(fingerprint, []).append(new["id"])


def seed(store: Store, state: RunState, tree: Unit, name: str, verdict: Verdict) -> bool:
  """Record a seed design with its check (seeds are not tested for novelty); False if stored already."""
  with store.transaction():
    cid, new = _design(store, tree, name, {}, [], "seed", name, verdict.status, verdict.report)
    if new is None:
      return False
    if verdict.fingerprint is not None:
      store.add_artifact(cid, "fingerprint", verdict.fingerprint)
    isles = islands.add_seed(state.islands, cid) if state.islands is not None else None
    if isles is not None:
      islands.save(store, isles)
  _learn_design(state, new, verdict.fingerprint)
  state.islands = isles
  return True


def proposal(store: Store, state: RunState, p: Proposal, verdict: Verdict | None) -> str | None:
  """Record proposal `p` with its verdict (None: checked by a verifier worker later: the design is
  `checking`, with a checker job), its artifacts, its island and any migration due, in one
  transaction with the proposal counter. Returns the design id (None: no design was stored)."""
  fingerprint = verdict.fingerprint if verdict is not None else None
  cid = new = None
  with store.transaction():
    if p.tree is not None:
      status, report = (("checking", {"checking": True, "proposal": p.index}) if verdict is None
                        else (verdict.status, verdict.report))
      cid, new = _design(store, p.tree, None, p.units, p.parents, p.mode, p.description, status, report)
      if new is None:
        cid = None
      elif verdict is None:
        store.enqueue(cid, CHECK_JOB)
      elif fingerprint is not None:
        store.add_artifact(cid, "fingerprint", fingerprint)
    for kind, content in p.artifacts.items():
      content = {**content, "design_id": cid} if kind == "designer" else content
      store.add_artifact(cid, kind, json.dumps(content, sort_keys=True, default=str))
    store.set_meta("proposals_done", p.index + 1)
    isles = state.islands
    if isles is not None:
      if cid is not None:
        isles = islands.add_child(isles, cid, p.parents, p.island)
      designs = list(state.designs.values()) + ([new] if new else [])
      isles = islands.after_proposal(state.key, isles, p.index + 1, state.config.evolution.migrate_every,
                                     designs, state.rungs[0])
      islands.save(store, isles)
  if new is not None:
    _learn_design(state, new, fingerprint)
  state.islands, state.proposals_done = isles, p.index + 1
  return cid


def verdict(store: Store, state: RunState, design_id: str, v: Verdict) -> None:
  """Give a `checking` design the verdict its checker job's result was judged to."""
  with store.transaction():
    store.set_status(design_id, v.status, v.report)
    if v.fingerprint is not None:
      store.add_artifact(design_id, "fingerprint", v.fingerprint)
  state.designs[design_id]["status"] = v.status
  if v.fingerprint is not None:
    state.fingerprints.setdefault(v.fingerprint, []).append(design_id)


def enqueue(store: Store, jobs: Iterable[tuple[str, str]]) -> None:
  with store.transaction():
    for design_id, rung in jobs:
      store.enqueue(design_id, rung)


def result(store: Store, worker_id: str, res: Verification | Failure | Leaking, lowest_rung: str) -> bool:
  """Record a training job's result and mark the job done, if `worker_id` still holds it (False:
  its lease was taken over; nothing recorded). A result makes the design verified; a failure at
  the lowest rung makes it failed; a leak (voided metrics) at any rung makes it leaking."""
  status = ("verified" if isinstance(res, Verification) else "leaking" if isinstance(res, Leaking)
            else "failed" if res.rung == lowest_rung else None)
  return store.complete(res.design_id, res.rung, worker_id, res.metrics, status=status)


def check_result(store: Store, worker_id: str, design_id: str, report: checker.Report,
                 fingerprint: str | None) -> bool:
  """Record a checker job's report and fingerprint for the controller to judge (False: the lease
  was taken over; nothing recorded)."""
  return store.complete_check(design_id, worker_id, {"report": report.to_dict(), "fingerprint": fingerprint})


def learn(state: RunState, store: Store, jobs: Iterable[tuple[str, str]]) -> None:
  """Bring the state up to date with the results of done `jobs` (recorded by `result`, by this
  process's in-process worker or by verifier workers): metrics at the job's rung and the status."""
  for design_id, rung in jobs:
    metrics = store.verification(design_id, rung)
    d = state.designs[design_id]
    if metrics is not None and rung in state.rungs:
      got = {**d["metrics"], rung: metrics}
      d["metrics"] = {r: got[r] for r in state.rungs if r in got}
    d["status"] = store.design(design_id)["status"]


def run_open(store: Store, config_json: str) -> None:
  """For verifier workers: publish the run's resolved config and mark the run unfinished."""
  published = store.artifacts(kind="config")
  with store.transaction():
    if not published or published[-1]["content"] != config_json:
      store.add_artifact(None, "config", config_json)
    if store.get_meta("run_finished"):
      store.set_meta("run_finished", False)


def run_finished(store: Store) -> None:
  store.set_meta("run_finished", True)


def replay(store: Store, result_json: str) -> None:
  """Keep a replay's comparison with the recorded run (genesys_jax/replay.py)."""
  store.add_artifact(None, "replay", result_json)
