"""The loop's side of the LLM designers (`evolution/designers/`): one proposal by `llm` or `direct`,
recorded in the store.

GP picks the mode and the parents (`Evolution.select`, the same draw as its own operators); the
designer makes the child; the child is recorded as an ordinary design (tree + code units, status
valid when accepted and passed by the sandboxed checker, else rejected) with artifacts `proposal`,
`reviews`, `ratings`, `plans`, `search`, `transcript` and `designer` (designer, title, rating,
attempts, tokens, dollars split proposal/implementation). A proposal that ends without a tree (no
review passed, over its budget) is recorded as run-level `designer` and `transcript` artifacts.
Everything of one proposal lands in one transaction with the proposal counter.

With `designer.endpoint` set (local:MODEL, openai:URL), the designers start a local Gemini-API
endpoint on 127.0.0.1 for the run (`evolution/designers/endpoint.py`) and `close` stops it; a
replay starts none (the record answers).
"""

from __future__ import annotations

import json
import time
from typing import Any

from evolution.designers import config as dconfig
from evolution.designers import context, direct, pipeline
from evolution.designers import endpoint
from evolution.designers.client import GeminiTransport
from evolution.designers.record import Recorder, load_records
from evolution.designers.session import DesignBudgetExhausted, RunBudgetExhausted, Session
from gab import codeunits
from gab.tree import design_to_json
from genesys_jax import code_units

__all__ = ["LLMDesigners", "RunBudgetExhausted"]


class LLMDesigners:
  def __init__(self, config: Any, store: Any, api_key: str | None):
    d = config.designer
    self.cfg, self.store, self.endpoint = d, store, None
    pricing = dconfig.pricing(d)
    if config.get("replay_from"):
      self.recorder = Recorder(store, pricing, replay=load_records(config.replay_from),
                               replay_from=config.replay_from)
    else:
      if d.get("endpoint"):
        self.endpoint = endpoint.Endpoint(endpoint.backend(d.endpoint, d))
        d = d.copy_and_resolve_references()
        with d.unlocked():
          d.base_url = self.endpoint.url
      self.recorder = Recorder(store, pricing, transport=GeminiTransport(d, api_key))
    self.check = pipeline.sandbox_checker(float(d.check_timeout_s))

  def close(self) -> None:
    """Stop the local endpoint, if this run started one."""
    if self.endpoint is not None:
      self.endpoint.close()
      self.endpoint = None

  def step(self, evo: Any, index: int, n: int, name: str) -> None:
    mode, parents = evo.select(index)
    if name == "direct":
      mode, parents = "scratch", []
    for row in self.store.code_units():
      codeunits.declare(row["source"])
    known = evo.known_canonical_ids()
    ctx = context.build(self.store, mode, parents, evo.checker_config().to_dict(),
                        evo.rung(evo.rungs[0]).to_dict(), known, evo.rungs)
    session = Session(self.recorder, self.cfg, index)
    start = time.monotonic()
    try:
      outcome = (direct.design if name == "direct" else pipeline.design)(session, ctx, self.cfg, self.check)
    except DesignBudgetExhausted as e:
      outcome = pipeline.Outcome("over_budget", name, description=str(e),
                                 info={"designer": name, "title": None, "rating": None})
    outcome.info["wall_s"] = round(time.monotonic() - start, 1)
    self.record(evo, index, n, outcome, session, mode, [p["id"] for p in parents])

  def record(self, evo: Any, index: int, n: int, outcome: pipeline.Outcome, session: Session,
             mode: str, parents: list[str]) -> None:
    store = self.store
    summary = {"proposal": index, "designer": outcome.designer, "status": outcome.status, "mode": mode,
               "parents": parents, "title": outcome.info.get("title"), "rating": outcome.info.get("rating"),
               "attempts": outcome.info.get("attempts", 0),
               "proposal_attempts": outcome.info.get("proposal_attempts", 0),
               "verdicts": outcome.info.get("verdicts", []), "wall_s": outcome.info.get("wall_s"),
               **session.summary()}
    summary["tokens_total"] = sum(summary["tokens"].values())
    tree, cid, stored = outcome.tree, None, False
    with store.transaction():
      if tree is not None:
        cid = tree.content_hash()
        report = dict(outcome.report or {"passed": False, "checks": [], "sizing": {}})
        fingerprint = report.pop("fingerprint", None)
        status = "valid" if outcome.status == "accepted" and report.get("passed") else "rejected"
        stored = store.add_design(cid, design_to_json(tree, units=outcome.units), parents, mode,
                                  outcome.description, status, report)
        if stored:
          code_units.record(store, tree, cid)
          if fingerprint and status == "valid":
            store.add_artifact(cid, "fingerprint", fingerprint)
      target = cid if stored else None
      summary["design_id"] = target
      for kind, content in sorted(outcome.artifacts.items()):
        if content:
          store.add_artifact(target, kind, json.dumps(content, sort_keys=True, default=str))
      store.add_artifact(target, "transcript", json.dumps(session.transcript, sort_keys=True))
      store.add_artifact(target, "designer", json.dumps(summary, sort_keys=True))
      store.set_meta("proposals_done", index + 1)
    evo.log(f"[{index + 1}/{n}] {cid or '-'} {outcome.designer} {mode} from {','.join(parents) or '-'} "
            f"({outcome.description or outcome.status}): {outcome.status}, "
            f"{summary['tokens_total']:,} tokens, ${summary['usd']:.4f}"
            + ("" if tree is None else f"; {_summary(outcome.report)}"))


def _summary(report: dict[str, Any] | None) -> str:
  if not report:
    return "not checked"
  failed = [c["name"] for c in report.get("checks", []) if c.get("status") == "fail"]
  return "checker passed" if report.get("passed") else f"checker failed ({', '.join(failed)})"
