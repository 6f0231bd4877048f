"""Recording and replay of every LLM call.

Every call a designer makes goes through `Recorder.ask`, keyed by (proposal index, role, attempt):
the attempt counts that role's calls within the proposal. The request (role, model, system
instruction, prompt, settings, schema) and the reply (text, usage, finish reason, latency,
grounding, error) are kept as a run-level store artifact of kind `llm_call`, with its cost, the
moment the reply arrives (so a run stopped mid-design still accounts for what it spent).

`--config.replay_from=OLD` serves every call from OLD's record instead: no key, no network. A call
OLD has no record for, or whose request differs from the recorded one, fails loudly (`ReplayError`),
naming the call. A proposal redone after a crash has its calls recorded again; the last record of a
key is the one that produced the stored design.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Mapping

from evolution.designers import cost
from evolution.designers.client import Call, Reply
from evolution.store import Store

KIND = "llm_call"
Key = tuple[int, str, int]


class ReplayError(ValueError):
  """The replayed run asked for a call the recording does not have."""


def _digest(call: Call) -> str:
  return hashlib.sha256(json.dumps(call.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def load_records(workdir: str) -> dict[Key, dict[str, Any]]:
  path = os.path.join(workdir, "evolution.db")
  if not os.path.exists(path):
    raise FileNotFoundError(f"replay_from: no evolution.db in {workdir}")
  with Store(path) as store:
    out = {}
    for art in store.artifacts(kind=KIND):
      rec = json.loads(art["content"])
      out[(rec["proposal"], rec["role"], rec["attempt"])] = rec
  return out


class Recorder:
  """Sends calls through `transport` (live) or serves them from `replay` records; records both."""

  def __init__(self, store: Store, pricing: Mapping[str, Any],
               transport: Callable[[Call, type | None], Reply] | None = None,
               replay: dict[Key, dict[str, Any]] | None = None, replay_from: str = ""):
    if transport is None and replay is None:
      raise ValueError("a Recorder needs a transport or replay records")
    self.store, self.pricing, self.transport = store, pricing, transport
    self.replay, self.replay_from = replay, replay_from
    self._spent: float | None = None

  def spent(self) -> float:
    """Dollars of every call recorded in this run so far (abandoned designs included)."""
    if self._spent is None:
      self._spent = sum(json.loads(a["content"])["usd"] for a in self.store.artifacts(kind=KIND))
    return self._spent

  def ask(self, key: Key, call: Call, schema: type | None = None) -> tuple[Reply, float]:
    if self.replay is not None:
      rec = self.replay.get(key)
      if rec is None:
        raise ReplayError(f"replay_from {self.replay_from}: no recorded {key[1]} call #{key[2]} of "
                          f"proposal {key[0]}; the replayed run asked for a call the recording never made")
      if rec["request_digest"] != _digest(call):
        new = call.to_dict()
        fields = [f for f in new if new[f] != rec["request"].get(f)]
        raise ReplayError(f"replay_from {self.replay_from}: the {key[1]} call #{key[2]} of proposal "
                          f"{key[0]} differs from the recorded request in {fields}")
      reply = Reply.from_dict(rec["reply"])
    else:
      reply = self.transport(call, schema)
    dollars = cost.usd(self.pricing, call.model, reply.usage)
    before = self.spent()
    record = {"proposal": key[0], "role": key[1], "attempt": key[2], "request": call.to_dict(),
              "request_digest": _digest(call), "reply": reply.to_dict(), "usd": dollars,
              "phase": cost.phase(key[1]), "replayed": self.replay is not None}
    self.store.add_artifact(None, KIND, json.dumps(record, sort_keys=True))
    self._spent = before + dollars
    return reply, dollars

  def calls(self, proposal: int) -> list[dict[str, Any]]:
    return [r for r in (json.loads(a["content"]) for a in self.store.artifacts(kind=KIND))
            if r["proposal"] == proposal]
