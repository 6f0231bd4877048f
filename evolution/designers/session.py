"""One proposal's conversation with the LLMs: attempt counters, budgets, tokens and dollars, and the
answer to each kind of reply a real Gemini sends.

A `Session` numbers each role's calls (the replay key), checks the budgets before every call and
adds up what the proposal used, split into the proposal phase (search, proposer, reviewer) and the
implementation phase (planner, coder, observer, direct). Budgets:
- `designer.max_usd` (the run): reached -> `RunBudgetExhausted`; the loop stops cleanly before the
  proposal is recorded, so raising the budget and running again redoes that proposal;
- `designer.max_usd_per_design`: reached -> `DesignBudgetExhausted`; the proposal ends as
  "over_budget" and the run goes on.
0 means no limit.

Replies that carry no usable answer are re-asked at once, as their cause calls for, and never
count as the role's failed try (each re-ask is its own recorded call):
- MAX_TOKENS (the output cap was reached: by thinking tokens, or by a long answer): the cap is
  doubled, up to `designer.max_output_tokens_limit`, and thinking is bounded to half the new cap
  when it was thinking that ate it; at the limit, the shorter ask below;
- a blocked prompt or answer (SAFETY, ...) or a prompt too long for the model (HTTP 400): the
  shorter ask, i.e. the role's prompt without its optional context (`short_prompt`), once;
- no candidates and no reason (a transient empty reply): asked again once as it was.
"""

from __future__ import annotations

import re
from typing import Any

from evolution.designers import cost, schemas
from evolution.designers.client import Call, Reply
from evolution.designers.config import BudgetStop, models
from evolution.designers.record import Recorder

BRIEF = ("\n\nYour previous answer to this was cut off at the output limit: answer again, complete "
         "and shorter (no commentary, short docstrings).")


# A prompt over the model's input limit: Gemini's words, and the local endpoint's.
_TOO_LONG = re.compile(r"exceeds the maximum number of tokens|does not fit the local model")


class RunBudgetExhausted(BudgetStop):
  pass


class DesignBudgetExhausted(Exception):
  pass


def reply_shape(reply: Reply) -> str:
  """ok | max_tokens | blocked | too_long | empty | error."""
  if reply.finish_reason == "MAX_TOKENS":
    return "max_tokens"
  if reply.blocked:
    return "blocked"
  if reply.error and reply.error.startswith("API error 400") and _TOO_LONG.search(reply.error):
    return "too_long"
  if reply.error and reply.error.startswith("empty reply"):
    return "empty"
  return "error" if reply.error else "ok"


class Session:
  def __init__(self, recorder: Recorder, cfg: Any, index: int):
    self.recorder, self.cfg, self.index = recorder, cfg, index
    self.counts: dict[str, int] = {}
    self.usd = {"proposal": 0.0, "implementation": 0.0}
    self.tokens = {"prompt": 0, "candidates": 0, "thoughts": 0, "tool_prompt": 0}
    self.transcript: list[dict[str, Any]] = []
    self.reasks: dict[str, int] = {}     # re-asks by reply shape
    self.models = models(cfg)

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

  def _send(self, role: str, system: str, prompt: str, schema: type | None, search: bool,
            cap: int, thinking: int) -> Reply:
    self._check_budget()
    attempt = self.counts.get(role, 0)
    self.counts[role] = attempt + 1
    model = self.models[role]
    settings = (("max_output_tokens", cap), ("seed", int(self.cfg.sampling_seed) + self.index),
                ("temperature", float(self.cfg.temperature)))
    if thinking >= 0:
      settings += (("thinking_budget", thinking),)
    if float(self.cfg.get("frequency_penalty", 0.0)):   # not sent at 0 (Gemini's default)
      settings += (("frequency_penalty", float(self.cfg.frequency_penalty)),)
    call = Call(role, model, system, prompt, schema.__name__ if schema else "", search, settings)
    reply, dollars = self.recorder.ask((self.index, role, attempt), call, schema)
    self.usd[cost.phase(role)] += dollars
    for k in self.tokens:
      self.tokens[k] += int(reply.usage.get(k, 0))
    self.transcript.append({"role": role, "attempt": attempt, "model": model, "prompt": prompt,
                            "reply": reply.text, "error": reply.error, "usd": dollars,
                            "usage": reply.usage, "finish_reason": reply.finish_reason,
                            "blocked": reply.blocked, "max_output_tokens": cap})
    return reply

  def ask(self, role: str, system: str, prompt: str, schema: type | None = None, search: bool = False,
          short_prompt: str | None = None):
    """(reply, parsed instance or None, error message or None) of one answer, re-asking as the
    reply's shape calls for (module docstring)."""
    cap, limit = int(self.cfg.max_output_tokens), int(self.cfg.max_output_tokens_limit)
    thinking = int(self.cfg.thinking_budget)
    shortened = repeated = False
    while True:
      reply = self._send(role, system, prompt, schema, search, cap, thinking)
      shape = reply_shape(reply)
      if shape == "max_tokens" and cap < limit:
        if int(reply.usage.get("thoughts", 0)) * 2 >= cap:  # thinking ate it: leave room to answer
          thinking = cap
        cap = min(2 * cap, limit)
      elif (shape in ("max_tokens", "blocked", "too_long") and not shortened
            and (short_prompt is not None or shape == "max_tokens")):
        shortened = True
        prompt = (short_prompt or prompt) + (BRIEF if shape == "max_tokens" else "")
      elif shape == "empty" and not repeated:
        repeated = True
      else:
        break
      self.reasks[shape] = self.reasks.get(shape, 0) + 1
    error = reply.error or (f"the answer was cut off at the output limit ({cap} tokens)"
                            if shape == "max_tokens" else None)
    parsed = None
    if error is None and schema is not None:
      parsed, error = schemas.validate(schema, reply.text)
    self.transcript[-1]["error"] = error
    return reply, parsed, error

  def summary(self) -> dict[str, Any]:
    return {"usd": round(self.total_usd, 6), "usd_proposal": round(self.usd["proposal"], 6),
            "usd_implementation": round(self.usd["implementation"], 6), "tokens": dict(self.tokens),
            "calls": dict(self.counts), "reasks": dict(sorted(self.reasks.items()))}
