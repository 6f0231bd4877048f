"""A fake Gemini endpoint on 127.0.0.1: the only test double of the project (the API is outside the
machine). The real `google-genai` client talks to it over HTTP.

It serves `POST /{v1,v1beta}/models/{model}:generateContent` (HTTP 200, key casing unchecked) from
scripted replies per role (the role is read from the `[genesys_jax role: NAME]` tag the designers put
in their system instruction), falling back to `auto_reply` (deterministic, valid replies for every
role) when a role's script is empty. A scripted step is a dict:
  {"text": str} | {"json": obj}        a reply (JSON is serialised as the reply's text)
  {"status": 429 | 503 | ...}          an error reply in the API's error format
  {"raw": str}                         a malformed body (not JSON)
  {"delay": seconds, ...}              sleep first (to make the client time out), then the rest
  optional "usage": {"prompt": n, "candidates": n, "thoughts": n}, "finish": "STOP"
and the reply shapes a real Gemini sends, each as it sends them:
  {"think": n, ...}                    the model thinks n tokens first (a "thought" part; thoughts
                                       count against `maxOutputTokens`, bounded by a thinking
                                       budget): if they reach the cap, the candidate has no parts
                                       and finishReason MAX_TOKENS, as when thinking eats the cap
  {"answer_tokens": n, ...}            the answer's length in tokens (default: its characters / 4):
                                       past what the cap leaves, it is cut there, MAX_TOKENS
  {"empty": True}                      no candidates at all, no reason
  {"block": "SAFETY", "if": s}         the prompt is blocked (promptFeedback.blockReason, no
                                       candidates), only when it contains s if "if" is given (so a
                                       shorter ask without s passes)
  {"withheld": "SAFETY"}               a candidate with finishReason SAFETY and no content

Run it for a manual smoke run: `python -m genesys_jax.cli.fake_gemini --port=8765` (prints its URL,
serves auto replies until interrupted).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
import time
from typing import Callable

from evolution.designers import gemini_wire
from evolution.designers.gemini_wire import request_text

_ROLE = re.compile(r"\[genesys_jax role: (\w+)\]")


def role_of(body: dict) -> str:
  m = _ROLE.search(request_text(body)[0] + "\n" + request_text(body)[1])
  return m.group(1) if m else "unknown"


# -- auto replies: a deterministic "model" that gives valid answers for every role ----------------
_UNIT_LINE = re.compile(r"^\s*\[([0-9.]*|root)\] (\S+) \((sequence_mixer|channel_mixer|norm|block)\)",
                        re.M)

TOKEN_SHIFT = '''"""{title}: mixes each position with the one before it (a causal token shift)."""
import flax.linen as nn
import jax.numpy as jnp
from gab.units.base import UnitModule

KIND = dict(
    name="{name}",
    role="sequence_mixer",
    params={{"mix": {{"default": {mix}, "domain": [0.25, {mix}, 0.75]}}}},
    slots=[],
    reads=[], writes=[],
)


class {name}(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    prev = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    m = self.hp("mix")
    h = nn.Dense(x.shape[-1], use_bias=False, name="proj")((1 - m) * x + m * prev)
    return h, z
'''

RESIDUAL_CHAIN = '''"""{name}: a pre-norm residual chain over its children."""
import flax.linen as nn
from gab.units.base import UnitModule

KIND = dict(
    name="{name}",
    role="block",
    params={{}},
    slots=[{{"name": "steps", "min_count": 1, "max_count": 4}}],
    reads=[], writes=[],
)


class {name}(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    for i in range(len(self.unit.children)):
      y, z = self.child(i)(nn.RMSNorm(name="norm" + str(i))(x), z)
      x = x + y
    return x, z
'''

DIRECT_BLOCK = TOKEN_SHIFT.replace('role="sequence_mixer"', 'role="block"').replace(
    "return h, z", "return x + h, z")


def fenced(source: str) -> str:
  """A coder's answer as a model writes it: a sentence, then the unit in a ```python block."""
  return f"Here is the unit.\n\n```python\n{source}```\n"


def _digest(text: str) -> int:
  return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def auto_reply(role: str, system: str, prompt: str) -> dict:
  """A valid structured reply for `role`, a deterministic function of the prompt."""
  n = _digest(prompt) % 1000
  mix = [0.3, 0.4, 0.5, 0.6][n % 4]
  if role == "proposer":
    units = [(p, k, r) for p, k, r in _UNIT_LINE.findall(prompt) if r == "sequence_mixer"]
    selection = units[0][0] if units and "Mode: mutation" in prompt else ""
    title = f"ShiftMix{n}"
    return {"json": {"title": title, "abstract": f"{title} replaces a mixer by a token shift.",
                     "motivation": "cheaper local mixing", "plan": "one new sequence mixer",
                     "selection": selection, "variant_name": title}}
  if role in ("reviewer", "observer"):
    return {"json": {"rating": 4, "review": "sound and causal", "suggestions": "none"}}
  if role == "planner":
    m = re.search(r"Title: (\w+)", prompt)
    name = (m.group(1) if m else f"ShiftMix{n}")[:36]
    mixer = {"name": name, "role": "sequence_mixer", "description": "token shift", "children": []}
    if "Mode: mutation" in prompt:
      return {"json": {"units": [mixer], "rationale": "a single new leaf"}}
    root = {"name": f"{name}Root", "role": "block", "description": "pre-norm residual chain",
            "children": [name, "keep:1:1" if "Parent 1:" in prompt else "GatedMLP"]}
    return {"json": {"units": [root, mixer], "rationale": "a new root over a new mixer and an MLP"}}
  if role == "coder":
    m = re.search(r"Write the unit (\w+) \(role (\w+)\)", prompt)
    name, unit_role = (m.group(1), m.group(2)) if m else (f"ShiftMix{n}", "sequence_mixer")
    source = (RESIDUAL_CHAIN.format(name=name) if unit_role == "block" else
              TOKEN_SHIFT.format(title=name, name=name, mix=mix))
    return {"text": fenced(source)}
  if role == "direct":
    name = f"DirectBlock{n}"
    return {"text": fenced(DIRECT_BLOCK.format(title=name, name=name, mix=mix))}
  if role == "searcher":
    return {"text": "Token shift (RWKV) mixes adjacent positions cheaply.",
            "grounding": {"queries": ["token shift language model"],
                          "urls": [("https://arxiv.org/abs/2305.13048", "RWKV")]}}
  return {"status": 400, "message": f"fake endpoint: no auto reply for role {role!r}"}


# -- the server -----------------------------------------------------------------------------------
class FakeGemini(gemini_wire.Server):
  """`with FakeGemini(script) as fake:` serves on `fake.url`; `fake.requests` logs every request."""

  def __init__(self, script: dict[str, list[dict]] | None = None,
               fallback: Callable[[str, str, str], dict] | None = auto_reply, port: int = 0):
    self.script = collections.defaultdict(list, {k: list(v) for k, v in (script or {}).items()})
    self.fallback = fallback
    self.requests: list[dict] = []
    self.lock = threading.Lock()
    super().__init__(self.answer, port)

  def add(self, role: str, *steps: dict) -> None:
    with self.lock:
      self.script[role].extend(steps)

  def roles(self) -> list[str]:
    return [r["role"] for r in self.requests]

  def next_step(self, body: dict, model: str, version: str, headers: dict) -> dict:
    role = role_of(body)
    with self.lock:
      self.requests.append({"role": role, "model": model, "version": version, "body": body,
                            "headers": headers})
      if self.script.get(role):
        return self.script[role].pop(0)
    if self.fallback is None:
      return {"status": 400, "message": f"fake endpoint: script for role {role!r} is exhausted"}
    return self.fallback(role, *request_text(body))

  def answer(self, model: str, version: str, body: dict, headers: dict) -> tuple[int, bytes]:
    step = self.next_step(body, model, version, headers)
    if step.get("delay"):
      time.sleep(step["delay"])
    return render(step, model, body)


def _thinking_budget(body: dict) -> int | None:
  g = body.get("generationConfig") or body.get("generation_config") or {}
  t = g.get("thinkingConfig") or g.get("thinking_config") or {}
  budget = t.get("thinkingBudget", t.get("thinking_budget"))
  return None if budget is None or int(budget) < 0 else int(budget)


def render(step: dict, model: str, body: dict | None = None) -> tuple[int, bytes]:
  """(HTTP status, body) of a scripted step, as Gemini would answer the request `body`."""
  body = body or {}
  if "status" in step and step["status"] != 200:
    return step["status"], gemini_wire.error_body(step["status"], step.get("message", "scripted error"))
  if "raw" in step:
    return 200, step["raw"].encode()
  usage = {"prompt": 1000, "candidates": 400, "thoughts": 100, **step.get("usage", {})}
  if step.get("empty"):
    return 200, gemini_wire.reply_body(model, None, None, {**usage, "candidates": 0, "thoughts": 0})
  if step.get("block") and step.get("if", "") in request_text(body)[1]:
    return 200, gemini_wire.reply_body(model, None, None, {**usage, "candidates": 0, "thoughts": 0},
                                       block_reason=step["block"])
  if step.get("withheld"):
    return 200, gemini_wire.reply_body(model, [], step["withheld"], {**usage, "candidates": 0})
  text = step["text"] if "text" in step else json.dumps(step.get("json", {}))
  finish, parts = step.get("finish", "STOP"), []
  if "think" in step or "answer_tokens" in step:
    cap = gemini_wire.generation_config(body)["max_tokens"] or 65536
    budget = _thinking_budget(body)
    thoughts = min(int(step.get("think", 0)), cap if budget is None else budget)
    answer = int(step.get("answer_tokens", len(text) // 4))
    if thoughts >= cap:
      return 200, gemini_wire.reply_body(model, [], "MAX_TOKENS", {**usage, "thoughts": cap, "candidates": 0})
    if thoughts + answer > cap:
      text, finish = text[:(cap - thoughts) * 4], "MAX_TOKENS"
    usage.update(thoughts=thoughts, candidates=min(answer, cap - thoughts))
  if "thought" in step:
    parts.append({"text": step["thought"], "thought": True})
  parts.append({"text": text})
  return 200, gemini_wire.reply_body(model, parts, finish, usage, grounding=step.get("grounding"))
