"""The designer's config (`c.designer` in configs/ladder.py, the record `DesignerConfig`) and the API
key check.

`kind`: gp (the offline GP operators; the default), llm (the agent pipeline), direct (one prompt,
one block), mixed (`llm_prob` of the proposals by the LLM pipeline, drawn from the proposal's
"designer" stream, evolution/streams.py; the rest by GP). `pricing` is a string "MODEL: USD_IN
USD_OUT; ..." (USD per 1M tokens; a string because config field names cannot hold the dots of model
names), kept with the run's config.

`endpoint`: "" talks to Gemini (or whatever speaks its API at `base_url`) with a key from the
environment; `local:MODEL` (a .gguf path or a packaged model) or `openai:URL` (an OpenAI-compatible
server) starts a local Gemini-API endpoint for the run (`endpoint.py`) and needs no key. With
`local:`, every role uses that one model (`models` are not consulted); models without a price in
`pricing` cost 0 on a local or OpenAI-compatible endpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ml_collections import ConfigDict

from evolution.designers import client, cost, endpoint, local_models
from gab import fields

KINDS = ("gp", "llm", "direct", "mixed")
ROLES = ("searcher", "proposer", "reviewer", "planner", "coder", "observer", "direct")


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


@dataclasses.dataclass(frozen=True)
class Models:
  """The Gemini model of each role (each must have a price in `designer.pricing`)."""
  searcher: str = fields.field("gemini-2.5-flash", "literature search", fields.string)
  proposer: str = fields.field("gemini-2.5-pro", "proposes a change", fields.string)
  reviewer: str = fields.field("gemini-2.5-flash", "rates a proposal", fields.string)
  planner: str = fields.field("gemini-2.5-flash", "lists the new units", fields.string)
  coder: str = fields.field("gemini-2.5-pro", "writes each unit", fields.string)
  observer: str = fields.field("gemini-2.5-flash", "rates each unit", fields.string)
  direct: str = fields.field("gemini-2.5-pro", "the direct baseline's one prompt", fields.string)


def _endpoint_rule(text):
  if not isinstance(text, str):
    return "a string"
  try:
    endpoint.parse(text) if text else None
  except ValueError:
    return "'' (Gemini), local:MODEL (a .gguf path or a packaged model) or openai:URL"
  return None


def _pricing_rule(text):
  try:
    parse_pricing(text)
  except (ValueError, AttributeError):
    return "entries 'MODEL: USD_IN USD_OUT' (USD per 1M tokens) separated by ';'"
  return None


_PROB = fields.probability
_POS = fields.number(0.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class DesignerConfig:
  """The `designer` config section. Adding a field: one line here (default, help, rule, and
  `results=False` if changing it cannot change what the run's results mean)."""
  kind: str = fields.field("gp", "who proposes: gp (offline), llm, direct, mixed", fields.one_of(*KINDS))
  llm_prob: float = fields.field(0.5, "mixed: share of proposals by the LLM pipeline", _PROB)
  endpoint: str = fields.field("", "'' (Gemini at base_url, key from the environment), local:MODEL "
                               "(a .gguf path or a packaged model) or openai:URL (no key)", _endpoint_rule)
  local_ctx: int = fields.field(16384, "local: the model's context in tokens", fields.integer(512))
  local_threads: int = fields.field(0, "local: CPU threads (0: all)", fields.integer(0), results=False)
  local_cache_mb: int = fields.field(1024, "local: prompt cache size", fields.integer(0), results=False)
  base_url: str = fields.field("", "the endpoint ('': Google's)", fields.string, results=False)
  api_version: str = fields.field("v1beta", "the API version", fields.string, results=False)
  timeout_s: float = fields.field(120.0, "one call's time limit", _POS, results=False)
  retry_attempts: int = fields.field(5, "tries of a call on 408/429/5xx and timeouts", fields.integer(1),
                                     results=False)
  retry_initial_s: float = fields.field(1.0, "first backoff", fields.number(0.0), results=False)
  retry_max_s: float = fields.field(30.0, "longest backoff", fields.number(0.0), results=False)
  models: Models = fields.section(Models, "the model of each role")
  pricing: str = fields.field(pricing_string(cost.DEFAULT_PRICING), "'MODEL: USD_IN USD_OUT; ...' "
                              "(USD per 1M tokens)", _pricing_rule)
  temperature: float = fields.field(1.0, "sampling temperature", fields.number(0.0))
  max_output_tokens: int = fields.field(16384, "tokens of one reply at most", fields.integer(1))
  max_output_tokens_limit: int = fields.field(65536, "MAX_TOKENS replies are re-asked with up to this "
                                             "cap", fields.integer(1))
  frequency_penalty: float = fields.field(0.0, "> 0 discourages repetition (small local models loop "
                                          "without it)", fields.number(0.0))
  thinking_budget: int = fields.field(-1, "thinking tokens (-1: the model's default)",
                                      fields.integer(0, also=(-1,)))
  sampling_seed: int = fields.field(0, "sent with each call (Gemini is not deterministic: the record "
                                    "is)", fields.integer(0))
  max_usd: float = fields.field(0.0, "the run's budget (0: none): it stops cleanly before the next "
                                "call (raise it and rerun to go on)", fields.number(0.0), results=False)
  max_usd_per_design: float = fields.field(3.0, "a design's budget (0: none)", fields.number(0.0))
  proposal_attempts: int = fields.field(5, "proposals until one passes review", fields.integer(1))
  review_pass: int = fields.field(4, "review rating that passes (1-5)", fields.integer(1, 5))
  observe_pass: int = fields.field(3, "observer rating that accepts a unit (1-5)", fields.integer(1, 5))
  unit_retries: int = fields.field(7, "tries per unit", fields.integer(1))
  max_failed_implementations: int = fields.field(3, "failed implementations before 'challenging'",
                                                 fields.integer(1))
  direct_attempts: int = fields.field(1, "tries of the direct baseline", fields.integer(1))
  allow_root: bool = fields.field(False, "a mutation may replace the root", fields.boolean)
  search: bool = fields.field(False, "literature search with Google Search grounding", fields.boolean)
  check_timeout_s: float = fields.field(300.0, "the sandboxed check's time limit", _POS)

  def problems(self) -> list[str]:
    table, names = pricing(self), models(self)
    return [f".models.{role} = {names[role]!r}: has no price in designer.pricing: add "
            f"'{names[role]}: USD_IN USD_OUT' (USD per 1M tokens)"
            for role in ROLES if names[role] not in table]


def default_config() -> ConfigDict:
  return fields.defaults(DesignerConfig)


def models(d: Any) -> dict[str, str]:
  """The model of each role: with a `local:` endpoint, its one model for every role."""
  if d.endpoint.startswith("local:"):
    return {role: local_models.model_name(d.endpoint.partition(":")[2]) for role in ROLES}
  return {role: getattr(d.models, role) for role in ROLES}


def pricing(d: Any) -> dict[str, dict[str, float]]:
  """The pricing table, with the models of a local or OpenAI-compatible endpoint at 0 unless priced."""
  table = parse_pricing(d.pricing)
  if d.endpoint:
    for model in models(d).values():
      table.setdefault(model, {"input": 0.0, "output": 0.0})
  return table


LOCAL_KEY = "no-key-local-endpoint"   # google-genai insists on a key; a local endpoint ignores it


def api_key(config: Any) -> str | None:
  """The API key an LLM run needs (None for gp or a replay; LOCAL_KEY for a local endpoint, whose
  model file must exist); a one-line ValueError when it has none. Called before anything is
  written (the config is validated: genesys_jax/validate.py)."""
  d = config.designer
  if d.kind == "gp" or config.replay_from:
    return None
  if d.endpoint:
    kind, target = endpoint.parse(d.endpoint)
    if kind == "local":
      try:
        local_models.check(target)
      except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    return LOCAL_KEY
  key = client.api_key_from_env()
  if not key:
    raise ValueError(f"designer.kind={config.designer.kind} needs a Gemini API key in the environment: "
                     f"set GEMINI_API_KEY (or GOOGLE_API_KEY), or use --config.designer.kind=gp")
  return key


class BudgetStop(Exception):
  """The run's designer budget (designer.max_usd) is spent: the loop stops cleanly."""
