"""One proposal's conversation with the LLMs: attempt counters, budgets, tokens and dollars.

A `Session` numbers each role's calls (the replay key), checks the budgets before every call and
adds up what the proposal used, split into the proposal phase (search, proposer, reviewer) and the
implementation phase (planner, coder, observer, direct). Budgets:
- `designer.max_usd` (the run): reached -> `RunBudgetExhausted`; the loop stops cleanly before the
  proposal is recorded, so raising the budget and running again redoes that proposal;
- `designer.max_usd_per_design`: reached -> `DesignBudgetExhausted`; the proposal ends as
  "over_budget" and the run goes on.
0 means no limit.
"""

from __future__ import annotations

from typing import Any

from evolution.designers import cost, schemas
from evolution.designers.config import BudgetStop
from evolution.designers.client import Call
from evolution.designers.record import Recorder


class RunBudgetExhausted(BudgetStop):
  pass


class DesignBudgetExhausted(Exception):
  pass


class Session:
  def __init__(self, recorder: Recorder, cfg: Any, index: int):
    self.recorder, self.cfg, self.index = recorder, cfg, index
    self.counts: dict[str, int] = {}
    self.usd = {"proposal": 0.0, "implementation": 0.0}
    self.tokens = {"prompt": 0, "candidates": 0, "thoughts": 0, "tool_prompt": 0}
    self.transcript: list[dict[str, Any]] = []

  @property
  def total_usd(self) -> float:
    return self.usd["proposal"] + self.usd["implementation"]

  def _check_budget(self) -> None:
    run_cap, design_cap = float(self.cfg.max_usd), float(self.cfg.max_usd_per_design)
    if run_cap > 0 and self.recorder.spent() >= run_cap:
      raise RunBudgetExhausted(f"designer budget exhausted: ${self.recorder.spent():.4f} spent of "
                               f"designer.max_usd=${run_cap:g}")
    if design_cap > 0 and self.total_usd >= design_cap:
      raise DesignBudgetExhausted(f"proposal {self.index} spent ${self.total_usd:.4f} of "
                                  f"designer.max_usd_per_design=${design_cap:g}")

  def ask(self, role: str, system: str, prompt: str, schema: type | None = None, search: bool = False):
    """(reply, parsed instance or None, error message or None) of one call."""
    self._check_budget()
    attempt = self.counts.get(role, 0)
    self.counts[role] = attempt + 1
    model = self.cfg.models[role]
    settings = (("max_output_tokens", int(self.cfg.max_output_tokens)),
                ("seed", int(self.cfg.sampling_seed) + self.index),
                ("temperature", float(self.cfg.temperature)))
    if int(self.cfg.thinking_budget) >= 0:
      settings += (("thinking_budget", int(self.cfg.thinking_budget)),)
    call = Call(role, model, system, prompt, schema.__name__ if schema else "", search, settings)
    reply, dollars = self.recorder.ask((self.index, role, attempt), call, schema)
    self.usd[cost.phase(role)] += dollars
    for k in self.tokens:
      self.tokens[k] += int(reply.usage.get(k, 0))
    parsed, error = (None, reply.error)
    if reply.error is None and schema is not None:
      parsed, error = schemas.validate(schema, reply.text)
    self.transcript.append({"role": role, "attempt": attempt, "model": model, "prompt": prompt,
                            "reply": reply.text, "error": error, "usd": dollars,
                            "usage": reply.usage, "finish_reason": reply.finish_reason})
    return reply, parsed, error

  def summary(self) -> dict[str, Any]:
    return {"usd": round(self.total_usd, 6), "usd_proposal": round(self.usd["proposal"], 6),
            "usd_implementation": round(self.usd["implementation"], 6), "tokens": dict(self.tokens),
            "calls": dict(self.counts)}
