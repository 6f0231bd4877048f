"""The designers' prompts: one system instruction per role and the renderings of trees, kinds,
code and reports they are built from. Everything here is text the API receives; nothing reads a
local file or the environment (so no key and no file ever goes into a prompt)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from gab import registry
from gab.tree import Unit

CODE_UNIT_FORMAT = '''A code unit is ONE Python source text:
```python
"""TokenShift: mixes each position with the previous one. (module docstring = the unit's doc)"""
import flax.linen as nn
import jax.numpy as jnp
from gab.units.base import UnitModule      # helpers allowed: gab.units.* (base, conv, norm, ...)

KIND = dict(                               # a literal dict (read without running the code)
    name="TokenShift",                     # an identifier: the name the plan gave the unit
    role="sequence_mixer",                 # sequence_mixer | channel_mixer | norm | block
    params={"mix": {"default": 0.5, "domain": [0.25, 0.5, 0.75]}},
    slots=[],                              # child slots, e.g. [{"name": "inner", "roles":
                                           #   ["channel_mixer"], "min_count": 1, "max_count": 1}]
    reads=[], writes=[],                   # the Z entries the unit reads / writes
)

class TokenShift(UnitModule):              # exactly one UnitModule subclass
  @nn.compact
  def __call__(self, x, z):                # x: [batch, length, d_model]; z: dict of side inputs
    prev = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    m = self.hp("mix")                     # hyperparameters through self.hp(name)
    return (1 - m) * x + m * prev, z       # same shape and dtype as x, and z
```
Rules: imports only jax, jax.numpy, flax.linen, numpy, math, functools, typing, dataclasses and
gab.units.*; no files, os, sys, subprocess, sockets, eval/exec, dunder attributes. The output at
position t may depend only on positions <= t (causal), must be differentiable and finite, and must
keep x's shape. Children of a unit with slots are called as `x, z = self.child(i)(x, z)`.
`self.dense(features, name, out=True)` makes a projection back into the residual stream.'''

PREAMBLE = ("You are part of Genesys-JAX, a system that discovers new autoregressive language-model "
            "blocks. A design is a tree of units (JAX/Flax modules); the block maps x [batch, length, "
            "d_model] to the same shape, causally, with a dict z of side variables threaded through "
            "the units and across blocks. The language model is token embedding -> n_blocks x block "
            "-> RMSNorm -> tied head; a block supplies its own norms and residuals.")

ROLE_TEXT = {
    "searcher": "Find recent literature relevant to improving the given design. Summarise the "
                "ideas worth trying in a few sentences.",
    "proposer": "Propose ONE change to the design: a new unit or recombination, novel and "
                "plausible, that could lower validation loss at equal parameter count.",
    "reviewer": "Review the proposal as a strict expert: novelty (against the sibling and similar "
                "designs shown), soundness, causality, feasibility. Rate it 1-5 (4 or more "
                "passes).",
    "planner": "Plan the implementation as a small tree of units: which new units to write (the "
               "first one is the top of the new material), and which existing kinds or kept "
               "subtrees become their children.",
    "coder": "Write exactly one code unit, complete and runnable, in the format below.",
    "observer": "Check that the implemented unit does what the proposal and the plan ask, is "
                "causal and reasonable. Rate it 1-5 (3 or more accepts).",
    "direct": "Write a whole new block as ONE code unit of role \"block\" (it supplies its own "
              "norms and residual connections), with a title and an abstract.",
}


def system(role: str) -> str:
  text = f"[genesys_jax role: {role}]\n{PREAMBLE}\n\n{ROLE_TEXT[role]}"
  if role in ("coder", "direct", "planner", "observer"):
    text += "\n\n" + CODE_UNIT_FORMAT
  return text


def path_str(path: Sequence[int]) -> str:
  return ".".join(str(i) for i in path) if path else "root"


def parse_path(text: str) -> tuple[int, ...] | None:
  text = text.strip().strip("[]")
  if text in ("", "root"):
    return ()
  try:
    return tuple(int(p) for p in text.split("."))
  except ValueError:
    return None


def render_tree(tree: Unit) -> str:
  lines = []
  for path, unit in tree.walk():
    try:
      role = registry.get(unit.kind).role
    except Exception:  # pylint: disable=broad-except  (an unknown kind is shown, not fatal)
      role = "unknown"
    params = ", ".join(f"{k}={v}" for k, v in unit.params)
    lines.append(f"{'  ' * len(path)}[{path_str(path)}] {unit.kind} ({role})"
                 + (f" {params}" if params else ""))
  return "\n".join(lines)


def render_kinds(code_kinds: Sequence[str] = ()) -> str:
  """The built-in kinds and the run's code kinds `code_kinds` (never whatever else this process
  happens to have declared: a prompt depends on the run alone, so a replay asks the same)."""
  from gab import codeunits  # pylint: disable=g-import-not-at-top
  lines = []
  for spec in registry.kinds().values():
    if codeunits.is_code_kind(spec.name) and spec.name not in code_kinds:
      continue
    slots = "; ".join(f"{s.name}: {'/'.join(s.roles)} x{s.min_count}..{s.max_count}" for s in spec.slots)
    params = ", ".join(f"{p.name}={p.default} in {list(p.domain)}" for p in spec.params)
    doc = (spec.doc or "").strip().splitlines()[0] if spec.doc else ""
    lines.append(f"- {spec.name} ({spec.role}" + (f"; slots {slots}" if slots else "")
                 + (f"; params {params}" if params else "") + ")" + (f": {doc}" if doc else ""))
  return "\n".join(lines)


def render_sources(sources: dict[str, str]) -> str:
  return "\n\n".join(f"# code unit {kind}\n```python\n{src}\n```" for kind, src in sorted(sources.items()))


def render_report(report: dict[str, Any]) -> str:
  """The checker's failed and warned checks, one per line, with their hints."""
  lines = []
  for check in report.get("checks", []):
    if check.get("status") != "pass":
      hint = f" (hint: {check['hint']})" if check.get("hint") else ""
      lines.append(f"- {check['name']} {check['status']}: {check.get('message', '')}{hint}")
  return "\n".join(lines) or "- (no failed checks)"


def render_proposal(p: Any) -> str:
  return (f"Title: {p.title}\nAbstract: {p.abstract}\nMotivation: {p.motivation}\nPlan: {p.plan}\n"
          f"Selected unit: {p.selection or '-'}")


def render_design(d: dict[str, Any], tree: Unit, sources: dict[str, str] | None = None,
                  result: str = "") -> str:
  text = f"Design {d['id']} ({d['operator']}: {d['description']})" + (f"; {result}" if result else "")
  text += "\n" + render_tree(tree)
  if sources:
    text += "\n" + render_sources(sources)
  return text


def as_json(obj: Any) -> str:
  return json.dumps(obj, indent=1, sort_keys=True)
