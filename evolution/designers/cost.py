"""Usage -> dollars, from the pricing table kept in the config (and so stored with the run).

`designer.pricing` maps a model name to USD per 1M tokens: `input` (prompt tokens, and the search
tool's prompt tokens) and `output` (candidates plus thinking tokens: output prices include
thinking). The defaults are second-hand transcriptions of Google's pricing page (see
../shared/GEMINI.md), unverified: correct them in the config for real budgets.
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_PRICING = {
    "gemini-2.5-pro": {"input": 1.25, "output": 10.0},
    "gemini-2.5-flash": {"input": 0.30, "output": 2.50},
    "gemini-2.5-flash-lite": {"input": 0.10, "output": 0.40},
    "gemini-3-flash-preview": {"input": 0.50, "output": 3.0},
    "gemini-3.1-pro-preview": {"input": 2.0, "output": 12.0},
}
PROPOSAL_ROLES = ("searcher", "proposer", "reviewer")   # the rest is implementation


def usd(pricing: Mapping[str, Any], model: str, usage: Mapping[str, int]) -> float:
  """The dollars one call cost; a model missing from the table is an error (checked at start-up)."""
  if model not in pricing:
    raise ValueError(f"designer.pricing has no entry for model {model!r}: add "
                     f"--config.designer.pricing.{model}.input=... and .output=... (USD per 1M tokens)")
  price = pricing[model]
  tokens_in = usage.get("prompt", 0) + usage.get("tool_prompt", 0)
  tokens_out = usage.get("candidates", 0) + usage.get("thoughts", 0)
  return (tokens_in * float(price["input"]) + tokens_out * float(price["output"])) / 1e6


def phase(role: str) -> str:
  return "proposal" if role in PROPOSAL_ROLES else "implementation"


def per_design_estimate(pricing: Mapping[str, Any], models: Mapping[str, str],
                        calls: Mapping[str, int], tokens_in: int = 6000, tokens_out: int = 1500) -> float:
  """A rough cost per design: `calls[role]` calls of `tokens_in`/`tokens_out` each at the role's model."""
  return sum(n * usd(pricing, models[role], {"prompt": tokens_in, "candidates": tokens_out})
             for role, n in calls.items())
