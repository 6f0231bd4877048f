"""The designer's config (`c.designer` in configs/ladder.py), its validation and the API key check.

`kind`: gp (the offline GP operators; the default), llm (the agent pipeline), direct (one prompt,
one block), mixed (`llm_prob` of the proposals by the LLM pipeline, drawn from the proposal's key,
the rest by GP). `pricing` is a string "MODEL: USD_IN USD_OUT; ..." (USD per 1M tokens; a string
because config field names cannot hold the dots of model names), kept with the run's config.

`endpoint`: "" talks to Gemini (or whatever speaks its API at `base_url`) with a key from the
environment; `local:MODEL` (a .gguf path or a packaged model) or `openai:URL` (an OpenAI-compatible
server) starts a local Gemini-API endpoint for the run (`endpoint.py`) and needs no key. With
`local:`, every role uses that one model (`models` are not consulted); models without a price in
`pricing` cost 0 on a local or OpenAI-compatible endpoint.
"""

from __future__ import annotations

from typing import Any

import jax
from ml_collections import ConfigDict

from evolution.designers import client, cost, endpoint, local_models

KINDS = ("gp", "llm", "direct", "mixed")
ROLES = ("searcher", "proposer", "reviewer", "planner", "coder", "observer", "direct")
_DESIGNER_STREAM = 1 << 29   # fold_in salt: the designer draw never collides with the proposal's


def pricing_string(table: dict[str, dict[str, float]]) -> str:
  return "; ".join(f"{m}: {p['input']:g} {p['output']:g}" for m, p in table.items())


def parse_pricing(text: str) -> dict[str, dict[str, float]]:
  out = {}
  for item in filter(None, (s.strip() for s in text.split(";"))):
    try:
      model, prices = item.split(":", 1)
      usd_in, usd_out = (float(x) for x in prices.split())
    except ValueError:
      raise ValueError(f"designer.pricing entry {item!r}: expected 'MODEL: USD_IN USD_OUT' "
                       f"(USD per 1M tokens), entries separated by ';'") from None
    out[model.strip()] = {"input": usd_in, "output": usd_out}
  return out


def default_config() -> ConfigDict:
  return ConfigDict(dict(
      kind="gp", llm_prob=0.5,
      endpoint="",                 # "" (Gemini at base_url), local:MODEL or openai:URL (no key)
      local_ctx=16384, local_threads=0, local_cache_mb=1024,  # local: context, threads (0: all), cache
      base_url="",                 # "" = Google's endpoint; e.g. http://127.0.0.1:8765 for the fake
      api_version="v1beta", timeout_s=120.0,
      retry_attempts=5, retry_initial_s=1.0, retry_max_s=30.0,   # 408/429/5xx and timeouts
      models=dict(searcher="gemini-2.5-flash", proposer="gemini-2.5-pro", reviewer="gemini-2.5-flash",
                  planner="gemini-2.5-flash", coder="gemini-2.5-pro", observer="gemini-2.5-flash",
                  direct="gemini-2.5-pro"),
      pricing=pricing_string(cost.DEFAULT_PRICING),
      temperature=1.0, max_output_tokens=16384, thinking_budget=-1,  # -1: the model's default
      max_output_tokens_limit=65536,   # MAX_TOKENS replies are re-asked with up to this cap
      frequency_penalty=0.0,       # > 0 discourages repetition (small local models loop without it)
      sampling_seed=0,             # sent, but Gemini is not deterministic: the record is
      max_usd=0.0, max_usd_per_design=3.0,   # 0 = no limit
      proposal_attempts=5, review_pass=4, observe_pass=3, unit_retries=7,
      max_failed_implementations=3, direct_attempts=1, allow_root=False, search=False,
      check_timeout_s=300.0))


def models(d: Any) -> dict[str, str]:
  """The model of each role: with a `local:` endpoint, its one model for every role."""
  if d.get("endpoint", "").startswith("local:"):
    return {role: local_models.model_name(d.endpoint.partition(":")[2]) for role in ROLES}
  return {role: d.models[role] for role in ROLES}


def pricing(d: Any) -> dict[str, dict[str, float]]:
  """The pricing table, with the models of a local or OpenAI-compatible endpoint at 0 unless priced."""
  table = parse_pricing(d.pricing)
  if d.get("endpoint"):
    for model in models(d).values():
      table.setdefault(model, {"input": 0.0, "output": 0.0})
  return table


LOCAL_KEY = "no-key-local-endpoint"   # google-genai insists on a key; a local endpoint ignores it


def validate(config: Any) -> str | None:
  """The API key for an LLM run (None for gp or a replay; LOCAL_KEY for a local endpoint); a
  one-line ValueError when unusable. Called before anything is written."""
  d = config.get("designer")
  if d is None or d.kind == "gp":
    return None
  if d.kind not in KINDS:
    raise ValueError(f"designer.kind={d.kind!r}: expected one of {', '.join(KINDS)}")
  if not 0.0 <= float(d.llm_prob) <= 1.0:
    raise ValueError(f"designer.llm_prob={d.llm_prob}: expected a probability in [0, 1]")
  if d.get("endpoint"):
    endpoint.parse(d.endpoint)
  table = pricing(d)
  for role, model in models(d).items():
    if model not in table:
      raise ValueError(f"designer.models.{role}={model!r} has no price in designer.pricing: "
                       f"add '{model}: USD_IN USD_OUT' (USD per 1M tokens)")
  if config.get("replay_from"):
    return None
  if d.get("endpoint"):
    kind, target = endpoint.parse(d.endpoint)
    if kind == "local":
      try:
        local_models.check(target)
      except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    return LOCAL_KEY
  key = client.api_key_from_env()
  if not key:
    raise ValueError(f"designer.kind={d.kind} needs a Gemini API key in the environment: set "
                     f"GEMINI_API_KEY (or GOOGLE_API_KEY), or use --config.designer.kind=gp")
  return key


def choose(config: Any, key: jax.Array, index: int) -> str:
  """Which designer makes proposal `index`: gp, llm or direct."""
  kind = config.designer.kind if config.get("designer") else "gp"
  if kind != "mixed":
    return kind
  draw = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, index), _DESIGNER_STREAM))
  return "llm" if float(draw) < float(config.designer.llm_prob) else "gp"


class BudgetStop(Exception):
  """The run's designer budget (designer.max_usd) is spent: the loop stops cleanly."""
