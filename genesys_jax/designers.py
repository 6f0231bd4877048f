"""The loop's side of the LLM designers (`evolution/designers/`): one proposal by `llm` or `direct`,
as a `Proposal` for the loop to record (genesys_jax/record.py).

GP picks the mode and the parents (`propose.draw`, the same draw as its own operators); the
designer makes the child and checks it (the sandboxed checker; its retries need the verdict). The
proposal carries the child (tree + code units), its verdict (valid when accepted and passed, else
rejected) and the artifacts `proposal`, `reviews`, `ratings`, `plans`, `search`, `transcript` and
`designer` (designer, title, rating, attempts, tokens, dollars split proposal/implementation). A
proposal that ends without a tree (no review passed, over its budget) carries no child: its
artifacts are recorded run-level. Everything of one proposal lands in one transaction with the
proposal counter. (The designers' recorder keeps each API call in the store as it is made.)

With `designer.endpoint` set (local:MODEL, openai:URL), the designers start a local Gemini-API
endpoint on 127.0.0.1 for the run (`evolution/designers/endpoint.py`) and `close` stops it; a
replay starts none (the record answers).
"""

from __future__ import annotations

import time
from typing import Any

from evolution.designers import config as dconfig
from evolution.designers import context, direct, pipeline
from evolution.designers import endpoint
from evolution.designers.client import GeminiTransport
from evolution.designers.record import Recorder, load_records
from evolution.designers.session import DesignBudgetExhausted, RunBudgetExhausted, Session
from gab import codeunits
from genesys_jax import check, propose
from genesys_jax.state import RunState

__all__ = ["LLMDesigners", "RunBudgetExhausted"]


class LLMDesigners:
  def __init__(self, config: Any, store: Any, api_key: str | None):
    d = config.designer
    self.cfg, self.store, self.endpoint = d, store, None
    pricing = dconfig.pricing(d)
    if config.replay_from:
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

  def propose(self, state: RunState, index: int, name: str) -> propose.Proposal:
    """Proposal `index` by designer `name` (llm or direct) on GP's draw for it."""
    where = propose.island(state, index)
    drawn = propose.draw(state, index, 0, propose.pool(state, where))
    mode, parents = drawn.mode, [state.trees.row(p["id"]) for p in drawn.parents]
    if name == "direct":
      mode, parents = "scratch", []
    for row in self.store.code_units():
      codeunits.declare(row["source"])
    config = state.config
    ctx = context.build(self.store, mode, parents, config.checker.to_dict(),
                        config.rungs[state.rungs[0]].to_dict(), state.known, list(state.rungs))
    session = Session(self.recorder, self.cfg, index)
    start = time.monotonic()
    try:
      outcome = (direct.design if name == "direct" else pipeline.design)(session, ctx, self.cfg, self.check)
    except DesignBudgetExhausted as e:
      outcome = pipeline.Outcome("over_budget", name, description=str(e),
                                 info={"designer": name, "title": None, "rating": None})
    outcome.info["wall_s"] = round(time.monotonic() - start, 1)
    return _proposal(index, outcome, session, mode, tuple(p["id"] for p in parents), where)


def _proposal(index: int, outcome: pipeline.Outcome, session: Session, mode: str,
              parents: tuple[str, ...], island: int | None) -> propose.Proposal:
  summary = {"proposal": index, "designer": outcome.designer, "status": outcome.status, "mode": mode,
             "parents": list(parents), "title": outcome.info.get("title"),
             "rating": outcome.info.get("rating"), "attempts": outcome.info.get("attempts", 0),
             "proposal_attempts": outcome.info.get("proposal_attempts", 0),
             "verdicts": outcome.info.get("verdicts", []), "wall_s": outcome.info.get("wall_s"),
             **session.summary()}
  summary["tokens_total"] = sum(summary["tokens"].values())
  artifacts = {kind: content for kind, content in sorted(outcome.artifacts.items()) if content}
  artifacts.update(transcript=session.transcript, designer=summary)
  verdict = None
  if outcome.tree is not None:
    report = dict(outcome.report or {"passed": False, "checks": [], "sizing": {}})
    fingerprint = report.pop("fingerprint", None)
    valid = outcome.status == "accepted" and report.get("passed")
    verdict = check.Verdict("valid" if valid else "rejected", report, fingerprint if valid else None)
  return propose.Proposal(index, outcome.tree, parents, mode, outcome.description, outcome.designer,
                          island, verdict, dict(outcome.units), artifacts)


def line(p: propose.Proposal, design_id: str | None, n: int) -> str:
  """An LLM proposal's log line: designer, outcome, tokens and dollars, and the checker's verdict."""
  summary = p.artifacts["designer"]
  verdict = "" if p.verdict is None else "; " + _summary(p.verdict.report)
  return (f"[{p.index + 1}/{n}] {design_id or '-'} {p.designer} {p.mode} from {','.join(p.parents) or '-'} "
          f"({p.description or summary['status']}): {summary['status']}, "
          f"{summary['tokens_total']:,} tokens, ${summary['usd']:.4f}{verdict}")


def _summary(report: dict[str, Any] | None) -> str:
  if not report:
    return "not checked"
  failed = [c["name"] for c in report.get("checks", []) if c.get("status") == "fail"]
  return "checker passed" if report.get("passed") else f"checker failed ({', '.join(failed)})"
