"""The direct-prompting baseline (the original's ablation): one prompt, one whole block.

No tree, no reviewer, planner or observer: the model writes the entire block as ONE code unit of
role "block" (its own norms and residuals), answering in a ```python block with the same system
instruction as the coder (contract, rules, worked example) and the checks' numbers; the unit is
linted, declared and checked in the sandbox exactly like the pipeline's units. `designer.direct_attempts` (default 1, as in the original's
comparison) bounds the tries; with more, each failure is fed back.
"""

from __future__ import annotations

from typing import Any

from evolution import canonical
from evolution.designers import contract, prompts, schemas
from evolution.designers.context import Context
from evolution.designers.pipeline import Checker, Outcome, verdict
from evolution.designers.session import Session
from gab import codeunits, registry
from gab.tree import DesignError, Unit, design_to_json


def _judge(source: str, ctx: Context, check: Checker):
  """(tree, units, report, feedback) of one reply's source."""
  lint = codeunits.lint(source)
  if lint:
    return None, {}, None, "The lint rejected the code:\n" + "\n".join(lint)
  try:
    cu = codeunits.parse(source)
    if cu.declaration.get("role") != "block":
      return None, {}, None, f"the unit's role is {cu.declaration.get('role')!r}; it must be \"block\""
    kind = codeunits.declare(cu)
  except DesignError as e:
    return None, {}, None, f"The code unit could not be read: {e}"
  tree = Unit.make(kind)
  errors = registry.type_errors(tree)
  if errors:
    return tree, {kind: source}, None, "The block is ill-typed: " + errors[0][1]
  tree = registry.normalize(tree)
  if canonical.canonical_id(tree) in ctx.known:
    return tree, {kind: source}, None, "The block is identical to a design already in the store."
  report = check(design_to_json(tree, units={kind: source}), ctx)
  if not report.get("passed"):
    return tree, {kind: source}, report, "The checker rejected the block:\n" + prompts.render_report(report)
  return tree, {kind: source}, report, ""


def design(session: Session, ctx: Context, cfg: Any, check: Checker) -> Outcome:
  feedback: list[str] = []
  verdicts: list[str] = []
  last = (None, {}, None)
  title = None
  for attempt in range(int(cfg.direct_attempts)):
    core = ("Write a new language-model block that could beat the designs below at equal "
            f"parameter count: one code unit of role \"block\" with no children (slots=[]); its "
            f"KIND name is the design's name and its docstring's first line the design's abstract."
            f"\n\nExisting designs:\n" +
            ("\n\n".join(prompts.render_tree(t) for t in ctx.trees) or "(none)") +
            f"\n\n{contract.checks_text(ctx.checker_cfg, ctx.rung)}")
    tail = "\n\nAnswer with the complete code unit in one ```python block."
    earlier = ("\n\nYour earlier attempts failed:\n" + "\n\n".join(feedback[-2:])) if feedback else ""
    reply, _, error = session.ask("direct", prompts.system("direct"),
                                  prompts.scrub_paths(core + earlier + tail), None,
                                  short_prompt=prompts.scrub_paths(core + tail))
    source = None
    if error is None:
      source, _, error = schemas.code_reply(reply.text)
    if source is None:
      feedback.append(f"Attempt {attempt + 1}: the reply was unusable: {error}")
      verdicts.append("reply")
      continue
    tree, units, report, why = _judge(source, ctx, check)
    verdicts.append(verdict(why, report))
    if tree is not None:
      last = (tree, units, report)
      title = codeunits.parse(source).name
    if not why:
      abstract = (codeunits.parse(source).doc.strip().splitlines() or [""])[0]
      return Outcome("accepted", "direct", tree, units, report, f"{title}: {abstract}"[:300],
                     {"designer": "direct", "title": title, "rating": None, "attempts": attempt + 1,
                      "verdicts": verdicts},
                     {"proposal": {"title": title, "abstract": abstract, "source": source}})
    feedback.append(f"Attempt {attempt + 1}: {why}\nIts code:\n```python\n{source.rstrip()}\n```")
  tree, units, report = last
  return Outcome("challenging", "direct", tree, units, report, f"{title or 'direct'}: failed",
                 {"designer": "direct", "title": title, "rating": None,
                  "attempts": int(cfg.direct_attempts), "verdicts": verdicts}, {"failures": feedback})
