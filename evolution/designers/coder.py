"""The coder: writes one planned unit, seeing everything it needs and nothing it cannot use.

Its prompt carries the proposal and its review, the plan, the design's tree with the unit's place
marked, the code of the unit it replaces and of its neighbours (parent, siblings, children; built-in
kinds' classes too), what its children are (a placeholder stands in for a planned child not written
yet), the z entries it may read, the checks with the run's numbers, and its earlier tries with what
failed (last, so a prefix cache keeps the rest). It answers in Markdown: the unit in a ```python
block, optionally a ```json list of its children when they differ from the plan (a new child is
planned on the spot and written after it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from evolution.designers import contract, prompts, schemas
from evolution.designers.context import Context
from evolution.designers.session import Session
from gab import codeunits, registry
from gab.tree import Unit

FEEDBACK_TRIES = 2   # earlier tries shown with their code (older ones by their verdict only)


@dataclasses.dataclass
class Job:
  """One unit to write, where it goes, and what is around it."""
  ctx: Context
  proposal: Any
  review: dict[str, Any] | None
  plan_lines: list[str]
  unit: schemas.PlannedUnit
  tree: Unit                       # the design with this unit as a placeholder (or, at the top of a
  path: tuple[int, ...]            # mutation, the parent's unit it replaces) at `path`
  children: list[tuple[str, str | None]]   # per child in order: its description, its kind (if any)
  sources: dict[str, str]          # every code kind's source known to the pipeline
  placeholders: set[str]           # the placeholder kinds


def _z_entries(tree: Unit, path: tuple[int, ...]) -> str:
  """The z entries a unit at `path` may read: the LM's, and those units before it write."""
  from gab.checks.zrule import lm_provided  # pylint: disable=g-import-not-at-top
  written = []
  for p, u in tree.walk():
    if p >= path:
      break
    for entry in registry.get(u.kind).writes:
      written.append(f"z[{entry!r}] (written by {u.kind} at [{prompts.path_str(p)}])")
  return ", ".join([f"z[{e!r}] (the language model)" for e in lm_provided()] + written)


def _neighbours(job: Job) -> dict[str, str]:
  """Sources of the unit replaced (a mutation's top) and of the parent, siblings and children."""
  wanted: list[tuple[str, str]] = []
  if job.ctx.mode == "mutation" and job.path == prompts.parse_path(job.proposal.selection):
    old = job.ctx.trees[0].get(job.path)
    wanted.append((f"the unit being replaced, {old.kind}", old.kind))
  if job.path:
    parent = job.tree.get(job.path[:-1])
    wanted.append((f"its parent {parent.kind} at [{prompts.path_str(job.path[:-1])}]", parent.kind))
    for i, sib in enumerate(parent.children):
      if i != job.path[-1]:
        wanted.append((f"its sibling {sib.kind} at [{prompts.path_str(job.path[:-1] + (i,))}]", sib.kind))
  wanted += [(f"its child {kind}", kind) for _, kind in job.children if kind is not None]
  out: dict[str, str] = {}
  seen = set(job.placeholders)
  for label, kind in wanted:
    src = None if kind in seen else contract.source(kind, job.sources)
    seen.add(kind)
    if src is not None:
      out[f"{kind} ({label})"] = src
  return out


SKELETON = '''"""{name}: <what it computes, in one line>.

<how, in a few lines>
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from gab.units.base import UnitModule
# and every helper you call, e.g. from gab.units.conv import causal_depthwise_conv

KIND = dict(
    name="{name}",
    role="{role}",
    params={{}},
    slots={slots},
    reads=[],
    writes=[],
)


class {name}(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    ...
    return y, z
'''


def skeleton(job: Job) -> str:
  """The unit's module with its KIND filled in from the plan: the coder fills in the rest."""
  slots = [{"name": f"child{i}", "roles": [_role(kind, line)], "min_count": 1, "max_count": 1}
           for i, (line, kind) in enumerate(job.children)]
  return SKELETON.format(name=job.unit.name, role=job.unit.role, slots=repr(slots))


def _role(kind: str | None, line: str) -> str:
  if kind is not None and kind in registry.kinds():
    return registry.get(kind).role
  return line.split("(", 1)[1].split(",", 1)[0]   # a placeholder's line: "Name (role, planned: ..."


def prompt(job: Job, feedback: list[str]) -> tuple[str, str]:
  """(prompt, the shorter prompt without the neighbours' code and the older tries)."""
  ctx, unit = job.ctx, job.unit
  marks = {job.path: (f"{unit.name} replaces this unit" if ctx.mode == "mutation" and job.path ==
                      prompts.parse_path(job.proposal.selection) else f"you are writing {unit.name}")}
  results = "; ".join(ctx.results) or "none yet"
  head = (f"Mode: {ctx.mode}. Parents: {', '.join(p['id'] for p in ctx.parents) or 'none'} "
          f"(results: {results}).\n\nProposal:\n{prompts.render_proposal(job.proposal)}\n"
          f"{prompts.render_review(job.review)}\n\nImplementation plan (units are written top-down; a "
          f"planned unit not written yet is a placeholder):\n" + "\n".join(job.plan_lines) +
          f"\n\nThe design as it stands:\n{prompts.render_tree(job.tree, marks)}")
  if ctx.mode == "crossover":
    head += "\n\n" + "\n\n".join(f"Parent {i}:\n{prompts.render_tree(t)}" for i, t in enumerate(ctx.trees))
  kids = ("\n".join(f"  {i}. {c}" for i, (c, _) in enumerate(job.children)) if job.children else
          "  none: a leaf (slots=[])")
  task = (f"\n\nWrite the unit {unit.name} (role {unit.role}): {unit.description}\n"
          f"- KIND name \"{unit.name}\", role \"{unit.role}\".\n"
          f"- Its children, in this order (declare slots that accept them, call them with "
          f"`y, z = self.child(i)(h, z)`):\n{kids}\n"
          f"- z entries it may read (declare them in `reads`): {_z_entries(job.tree, job.path)}.\n"
          f"- Start from this skeleton: fill in the docstring, `params` and `__call__`, and import "
          f"whatever else you use (every name must be imported or defined):\n```python\n"
          f"{skeleton(job)}```\n\n{contract.checks_text(ctx.checker_cfg, ctx.rung)}")
  code = _neighbours(job)
  neighbours = ("\n\nCode around it:\n" + prompts.render_sources(code)) if code else ""
  answer = ("\n\nAnswer with the complete code unit in one ```python block. Only if its children "
            "must differ from the list above, add a ```json block listing them in order: "
            "[{\"name\": ..., \"role\": ..., \"description\": ...}] (a planned unit, an existing "
            "kind, keep:P:PATH, or a new unit, which is then written after this one).")
  tries = ""
  if feedback:
    shown = feedback[-FEEDBACK_TRIES:]
    older = [f.split("\n", 1)[0] for f in feedback[:-FEEDBACK_TRIES]]
    tries = ("\n\nYour earlier tries at this unit failed; fix what failed:\n"
             + "\n".join(older + shown))
  return (prompts.scrub_paths(head + neighbours + task + tries + answer),
          prompts.scrub_paths(head + task + ("\n\n" + feedback[-1] if feedback else "") + answer))


def code(session: Session, job: Job, feedback: list[str]):
  """(source, declared children or None, error) of one coder call."""
  text, short = prompt(job, feedback)
  reply, _, error = session.ask("coder", prompts.system("coder"), text, None, short_prompt=short)
  if error:
    return None, None, error
  return schemas.code_reply(reply.text)


def child_line(c: str, planned: dict[str, schemas.PlannedUnit], written: dict[str, str],
               ctx: Context, keep) -> tuple[str, str | None]:
  """(how a child is described to the coder of its parent, the kind whose code it runs, if any)."""
  if c in planned:
    u = planned[c]
    if c in written:
      return f"{c} ({u.role}, planned: {u.description}; written as {written[c]})", written[c]
    return f"{c} ({u.role}, planned: {u.description}; a placeholder until it is written after this unit)", None
  if c.startswith("keep:"):
    sub = keep(c, ctx)
    return f"{c}: the parent's subtree {prompts.unit_line(sub)} ({sub.size()} units), kept as it is", sub.kind
  spec = registry.get(c)
  return f"{c} ({spec.role}, {'code unit' if codeunits.is_code_kind(c) else 'built-in'}, defaults)", c
