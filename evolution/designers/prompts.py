"""The designers' prompts: one system instruction per role and the renderings of trees, kinds,
code and reports they are built from. Everything here is text the API receives; nothing reads a
local file of the user or the environment (so no key and no file ever goes into a prompt), and
absolute paths in checker messages are cut to their project- or package-relative part.

Every role's system instruction starts with the same long text (what the system is, the unit
contract, the lint's rules, the helpers, a worked example: `contract.system_text`) and ends with the
role's own paragraph, so a server that caches prompt prefixes (llama.cpp, Gemini's implicit cache)
evaluates the shared part once.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Sequence

from evolution.designers import contract
from gab import registry
from gab.tree import Unit

PREAMBLE = ("You are part of Genesys-JAX, a system that discovers new autoregressive language-model "
            "blocks. A design is a tree of units (JAX/Flax modules, written in Python); the block "
            "maps x [batch, length, d_model] to the same shape, causally, with a dict z of side "
            "variables threaded through the units and across blocks. Designs are proposed, "
            "reviewed, planned as a few new units, coded one unit at a time (the top unit first; "
            "units not yet written stand in as placeholders), checked by a symbolic checker, and "
            "the survivors trained and compared by validation loss at equal parameter count.")

ROLE_TEXT = {
    "searcher": "Your role: find recent literature relevant to improving the given design. "
                "Summarise the ideas worth trying in a few sentences.",
    "proposer": "Your role: the proposer. Propose ONE change to the design: a new unit or "
                "recombination, novel and plausible, that could lower validation loss at equal "
                "parameter count. Answer with the JSON object asked for.",
    "reviewer": "Your role: the reviewer. Review the proposal as a strict expert: novelty "
                "(against the sibling and similar designs shown), soundness, causality, "
                "feasibility as code units. Rate it 1-5 (4 or more passes). Answer with the JSON "
                "object asked for.",
    "planner": "Your role: the planner. Plan the implementation as a small tree of new units (the "
               "first one is the top of the new material) and say which existing kinds or kept "
               "subtrees become their children. Answer with the JSON object asked for.",
    "coder": "Your role: the coder. Write exactly one code unit, complete and runnable, following "
             "the contract and the rules above. Answer with the code in one ```python block.",
    "observer": "Your role: the observer. Check that the implemented unit does what the proposal "
                "and the plan ask, is causal and reasonable. Rate it 1-5 (3 or more accepts). "
                "Answer with the JSON object asked for.",
    "direct": "Your role: write a whole new language-model block as ONE code unit of role "
              "\"block\" (it supplies its own norms and residual connections). Answer with the code "
              "in one ```python block.",
}


def system(role: str) -> str:
  """The shared text, then the role's paragraph and its tag (the tag lets the test double and a
  reader of a transcript tell the roles apart)."""
  return (f"{PREAMBLE}\n\n{contract.system_text()}\n\n{ROLE_TEXT[role]}\n"
          f"[genesys_jax role: {role}]")


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


def unit_line(unit: Unit) -> str:
  try:
    role = registry.get(unit.kind).role
  except Exception:  # pylint: disable=broad-except  (an unknown kind is shown, not fatal)
    role = "unknown"
  params = ", ".join(f"{k}={v}" for k, v in unit.params)
  return f"{unit.kind} ({role})" + (f" {params}" if params else "")


def render_tree(tree: Unit, marks: dict[tuple[int, ...], str] | None = None) -> str:
  """One line per unit, `[path] Kind (role) params`, with `<== note` after the marked paths."""
  marks = marks or {}
  lines = []
  for path, unit in tree.walk():
    note = f"   <== {marks[path]}" if path in marks else ""
    lines.append(f"{'  ' * len(path)}[{path_str(path)}] {unit_line(unit)}{note}")
  return "\n".join(lines)


def needs_children(spec: registry.KindSpec) -> list[str]:
  """The slots of a kind that need children, as "name (min)": built with its defaults such a kind
  has none, so a plan can reuse it only as a kept subtree."""
  return [f"{slot.name} ({slot.min_count})" for slot in spec.slots if slot.min_count]


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
    z = (f"; reads z {list(spec.reads)}" if spec.reads else "") + (
        f"; writes z {list(spec.writes)}" if spec.writes else "")
    doc = (spec.doc or "").strip().splitlines()[0] if spec.doc else ""
    if needs_children(spec):
      slots += "; needs children, so a plan names it only through keep:P:PATH"
    lines.append(f"- {spec.name} ({spec.role}" + (f"; slots {slots}" if slots else "")
                 + (f"; params {params}" if params else "") + z + ")" + (f": {doc}" if doc else ""))
  return "\n".join(lines)


def render_sources(sources: dict[str, str]) -> str:
  return "\n\n".join(f"# {kind}\n```python\n{src.rstrip()}\n```" for kind, src in sorted(sources.items()))


def _roots() -> list[str]:
  import gab  # pylint: disable=g-import-not-at-top
  roots = [os.path.dirname(os.path.dirname(os.path.abspath(gab.__file__)))]
  roots += sorted({p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}, key=len,
                  reverse=True)
  return [r.rstrip("/") + "/" for r in roots]


_ABSOLUTE = re.compile(r"(?<![\w.])(/[^\s'\"():,]+)")


def scrub_paths(text: str) -> str:
  """This machine's absolute paths cut to what a model can use and a machine must not leak: the
  part below the project or the Python packages, else the file's name."""
  roots = _roots()

  def cut(m: re.Match) -> str:
    path = m.group(1)
    top = path.split("/")[1]
    if not top or not os.path.isdir("/" + top):
      return path                    # not this machine's: "/blocks_0/root/..." (a module path)
    for root in roots:
      if path.startswith(root):
        return path[len(root):]
    return os.path.basename(path) or path
  return _ABSOLUTE.sub(cut, text)


def render_report(report: dict[str, Any]) -> str:
  """The checker's failed and warned checks, one per line, with their hints."""
  lines = []
  for check in report.get("checks", []):
    if check.get("status") != "pass":
      hint = f" (hint: {check['hint']})" if check.get("hint") else ""
      lines.append(f"- {check['name']} {check['status']}: {check.get('message', '')}{hint}")
  return scrub_paths("\n".join(lines) or "- (no failed checks)")


def render_proposal(p: Any) -> str:
  return (f"Title: {p.title}\nAbstract: {p.abstract}\nMotivation: {p.motivation}\nPlan: {p.plan}\n"
          f"Selected unit: {p.selection or '-'}")


def render_review(review: dict[str, Any] | None) -> str:
  if not review:
    return ""
  return (f"Review ({review['rating']}/5): {review['review']}\nSuggestions: "
          f"{review.get('suggestions', '')}")


def render_design(d: dict[str, Any], tree: Unit, sources: dict[str, str] | None = None,
                  result: str = "", history: str = "") -> str:
  text = f"Design {d['id']} ({d['operator']}: {d['description']})" + (f"; {result}" if result else "")
  if history:
    text += "\n" + history
  text += "\n" + render_tree(tree)
  if sources:
    text += "\nIts code units:\n" + render_sources(sources)
  return text


def as_json(obj: Any) -> str:
  return json.dumps(obj, indent=1, sort_keys=True)
