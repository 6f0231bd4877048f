"""The agents around the coder: proposer (+ search), reviewer, planner and observer, each one
structured call (the coder is `coder.py`).

Each function builds its role's prompt from the context and the history fed back to it, asks once
through the proposal's `Session` (which re-asks a reply that carries no answer), and returns the
validated reply or the error message to feed back. The proposal loop (`propose`) is here too: up to
`designer.proposal_attempts` proposals, each failed review (or invalid reply) going into the next
attempt's prompt; it passes at rating >= review_pass.

Prompts put the optional context (siblings, similar proposals, earlier attempts) last, and pass a
`short_prompt` without it: the shorter ask for a reply that was blocked or a prompt that was too long.
"""

from __future__ import annotations

import re
from typing import Any

from evolution.designers import prompts, schemas
from evolution.designers.context import Context
from evolution.designers.session import Session
from gab import registry

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
MAX_PLANNED_UNITS = 6


def parents_text(ctx: Context) -> str:
  if not ctx.parents:
    return "No parent: design a new block from scratch (a new root with at least one child)."
  parts = []
  for i, (d, tree) in enumerate(zip(ctx.parents, ctx.trees)):
    mine = {k: s for k, s in ctx.sources.items() if any(u.kind == k for _, u in tree.walk())}
    history = ctx.histories[i] if i < len(ctx.histories) else ""
    parts.append(f"Parent {i}: " + prompts.render_design(d, tree, mine, ctx.results[i], history))
  return "\n\n".join(parts)


def optional_context(ctx: Context) -> str:
  text = ""
  if ctx.siblings:
    text += "\n\nSibling designs (other children of the parents):\n" + "\n".join(f"- {s}" for s in ctx.siblings)
  if ctx.similar:
    text += "\n\nThe most similar earlier proposals:\n" + "\n".join(f"- {s}" for s in ctx.similar)
  return text


def search(session: Session, ctx: Context) -> dict[str, Any] | None:
  """Optional literature search (Google Search grounding, free text, its own call)."""
  prompt = ("Search the literature for ideas that could improve this language-model block; list "
            "the most relevant papers and what to borrow from each.\n\n" + parents_text(ctx))
  reply, _, error = session.ask("searcher", prompts.system("searcher"), prompt, None, search=True)
  if error:
    return {"error": error, "notes": "", "queries": [], "urls": []}
  g = reply.grounding or {}
  return {"notes": reply.text or "", "queries": g.get("queries", []), "urls": g.get("urls", [])}


def selectable(ctx: Context, allow_root: bool) -> list[str]:
  """The paths a mutation may select in parent 0."""
  return [prompts.path_str(p) for p, _ in ctx.trees[0].walk() if p or allow_root]


def _selection_error(p: schemas.Proposal, ctx: Context, allow_root: bool) -> str | None:
  if ctx.mode != "mutation":
    return None
  if p.selection not in selectable(ctx, allow_root):
    return (f"selection {p.selection!r} must be the path of one unit of parent 0 (the root is not "
            f"allowed), one of {selectable(ctx, allow_root)}")
  return None


TASKS = {"mutation": "Change ONE unit of parent 0: give its path in `selection`; every other unit "
                     "stays as it is. Do not select the root.",
         "crossover": "Recombine units of the parents under a new root (`selection` \"\").",
         "scratch": "Design a new block: a new root with children, reusing existing kinds where "
                    "useful (`selection` \"\")."}


def propose(session: Session, ctx: Context, cfg: Any, notes: dict[str, Any] | None):
  """(proposal, reviews, attempts): the first proposal whose review passes, or None."""
  history: list[str] = []
  reviews: list[dict[str, Any]] = []
  paths = selectable(ctx, bool(cfg.allow_root)) if ctx.mode == "mutation" else [""]
  schema = schemas.proposal_schema(paths)
  for attempt in range(int(cfg.proposal_attempts)):
    core = (f"Mode: {ctx.mode}. {TASKS[ctx.mode]}\n\n{parents_text(ctx)}\n\nUnit kinds available:\n"
            f"{prompts.render_kinds(sorted(ctx.stored_units))}")
    if notes and notes.get("notes"):
      core += f"\n\nLiterature notes:\n{notes['notes']}"
    tail = ("\n\nAnswer with: title (the new design's name, an identifier), abstract, motivation, "
            "plan (which units to write and how they compute, in a few sentences), selection, "
            "variant_name.")
    earlier = ("\n\nYour earlier attempts and why they failed:\n" + "\n\n".join(history[-3:])) if history else ""
    _, p, error = session.ask("proposer", prompts.system("proposer"),
                              core + optional_context(ctx) + earlier + tail, schema,
                              short_prompt=core + earlier + tail)
    if p is not None:
      error = _selection_error(p, ctx, bool(cfg.allow_root)) or (
          None if IDENT.match(p.title) else f"title {p.title!r} must be an identifier (a design name)") or (
          f"title {p.title!r} is the name of an existing kind: name the new design for what is new"
          if p.title in registry.kinds() else None)
    if error:
      history.append(f"Attempt {attempt + 1} was invalid: {error}")
      continue
    rating, review_error = review(session, ctx, p)
    if rating is None:
      history.append(f"Attempt {attempt + 1} ({p.title}) could not be reviewed: {review_error}")
      continue
    reviews.append({"attempt": attempt + 1, "title": p.title, **rating.model_dump()})
    if rating.rating >= int(cfg.review_pass):
      return p, reviews, attempt + 1
    history.append(f"Attempt {attempt + 1}:\n{prompts.render_proposal(p)}\nReview (rating "
                   f"{rating.rating}/5): {rating.review}\nSuggestions: {rating.suggestions}")
  return None, reviews, int(cfg.proposal_attempts)


def _rating(session: Session, role: str, prompt: str, short_prompt: str | None = None):
  _, r, error = session.ask(role, prompts.system(role), prompt, schemas.Rating, short_prompt=short_prompt)
  return r, error


def review(session: Session, ctx: Context, p: schemas.Proposal):
  core = f"Mode: {ctx.mode}. {TASKS[ctx.mode]}\n\nProposal:\n{prompts.render_proposal(p)}\n\n{parents_text(ctx)}"
  tail = "\n\nRate the proposal 1-5 (4 or more passes), with a review and suggestions."
  return _rating(session, "reviewer", core + optional_context(ctx) + tail, core + tail)


PLAN_ASKS = 2   # asks per implementation: a refused plan is re-asked with its error at once


def child_options(ctx: Context) -> str:
  """What a planned unit's `children` may name besides the new units of the plan: the reusable
  (leaf) kinds and the parents' subtrees (a small model is told the set, not a rule)."""
  leaves = [k for k in sorted(registry.kinds()) if child_error(k, ctx, set()) is None]
  keeps = [f"keep:{i}:{prompts.path_str(path)} ({u.kind})" for i, tree in enumerate(ctx.trees)
           for path, u in tree.walk() if path][:40]
  return (f"leaf kinds {', '.join(leaves)}; "
          + (f"kept subtrees {', '.join(keeps)}" if keeps else "no keep:P:PATH (there is no parent)"))


def plan(session: Session, ctx: Context, p: schemas.Proposal, failures: list[str]):
  """(plan, None), or (last plan or None, its error) after `PLAN_ASKS` refused asks; each re-ask
  carries the refused plans and why (a plan error costs a call, not an implementation)."""
  stored = "\n".join(f"- {k}" for k in sorted(ctx.stored_units)) or "- (none)"
  where = (f"In this mutation the first unit replaces the unit at {p.selection} of parent 0: "
           f"{prompts.unit_line(ctx.trees[0].get(prompts.parse_path(p.selection)))}."
           if ctx.mode == "mutation" else "The first unit is the new root (with at least one child).")
  prompt = (f"Mode: {ctx.mode}.\n\nProposal:\n{prompts.render_proposal(p)}\n\n{parents_text(ctx)}\n\n"
            f"Unit kinds available:\n{prompts.render_kinds(sorted(ctx.stored_units))}\n\n"
            f"Code units in the store:\n{stored}\n\n"
            f"List the new units to write (at least 1, at most {MAX_PLANNED_UNITS}), the top one "
            f"first, each with a new name (not one of the kinds above). {where} "
            "Units are written top-down: the first, then its new children, each unit standing in "
            "as a placeholder until its turn. Each unit's `children` name, in order: other planned "
            "units, existing kinds to reuse (leaf kinds, built with their defaults), or `keep:P:PATH` "
            "for parent P's subtree at PATH. Reuse what exists where you can: every new unit is "
            "more code that must pass the checker.\n\nBesides the new units of your plan, children "
            f"may name only: {child_options(ctx)}. Kinds that need children ({', '.join(_structural())}) "
            "are never named as children: a new unit's code does what they do.")
  if failures:
    prompt += "\n\nEarlier implementations of this proposal failed:\n" + "\n".join(failures)
  refused: list[str] = []
  plan_, error = None, None
  for _ in range(PLAN_ASKS):
    again = ("\n\nThese plans were refused; answer with a corrected plan:\n" + "\n".join(refused[-2:])
             if refused else "")
    _, plan_, error = session.ask("planner", prompts.system("planner"), prompt + again, schemas.Plan)
    error = error or plan_error(plan_, ctx, p.title)
    if error is None:
      return plan_, None
    refused.append(f"- {plan_.model_dump_json() if plan_ is not None else '(no plan)'}\n"
                   f"  refused: {error}")
  return plan_, error


def fallback_plan(ctx: Context, p: schemas.Proposal) -> schemas.Plan:
  """The plan when the planner's were refused: the proposal's one new unit, named by its title,
  with the children it must have (a mutation: those of the unit it replaces; a crossover: the
  parents' root children, alternating; scratch: none, a whole block in one unit); the coder may
  declare others, as the original's coder does without a plan."""
  if ctx.mode == "mutation":
    where = prompts.parse_path(p.selection)
    replaced = ctx.trees[0].get(where)
    role = registry.get(replaced.kind).role
    children = [f"keep:0:{prompts.path_str(where + (i,))}" for i in range(len(replaced.children))]
  else:
    role = registry.BLOCK
    widest = max((len(t.children) for t in ctx.trees), default=0)
    children = [f"keep:{j % len(ctx.trees)}:{j}" for j in range(widest)
                if j < len(ctx.trees[j % len(ctx.trees)].children)]
  return schemas.Plan(units=[schemas.PlannedUnit(name=p.title, role=role, description=p.plan[:400],
                                                 children=children)],
                      rationale="the planner's plans were refused: the proposal's unit alone")


def child_error(c: str, ctx: Context, planned: set[str]) -> str | None:
  """Why `c` cannot be a child (a planned unit, a known kind or keep:P:PATH), or None."""
  if c in planned:
    return None
  if c.startswith("keep:"):
    return None if keep_subtree(c, ctx) is not None else f"child {c!r} names no subtree of a parent"
  if c in registry.kinds() and (c in ctx.stored_units or not _is_code(c)):
    needs = prompts.needs_children(registry.get(c))
    if needs:  # a tree no coder can make well typed
      return (f"child {c!r} is a kind that needs children ({', '.join(needs)}): reused as a child "
              f"it is built with its defaults, which have none")
    return None
  return f"child {c!r} is neither a planned unit, a known kind nor keep:P:PATH"


def _structural() -> list[str]:
  """The built-in kinds with a slot that needs children."""
  return [k for k, spec in sorted(registry.kinds().items()) if not _is_code(k) and prompts.needs_children(spec)]


def _is_code(kind: str) -> bool:
  from gab import codeunits  # pylint: disable=g-import-not-at-top
  return codeunits.is_code_kind(kind)


def plan_error(plan_: schemas.Plan, ctx: Context, title: str = "") -> str | None:
  """Why a plan cannot be built into a tree, or None (`title`: the proposal's, a name to suggest)."""
  if not plan_.units:
    return "the plan lists no units"
  if len(plan_.units) > MAX_PLANNED_UNITS:
    return f"the plan lists {len(plan_.units)} units; at most {MAX_PLANNED_UNITS}"
  names = [u.name for u in plan_.units]
  if len(set(names)) != len(names):
    return f"unit names repeat: {names}"
  used: list[str] = []
  for u in plan_.units:
    if not IDENT.match(u.name) or "@" in u.name:
      return f"unit name {u.name!r} must be an identifier"
    if u.name in registry.kinds():
      fresh = title if IDENT.match(title) and title not in registry.kinds() and title not in names \
          else f"{u.name}2"
      return (f"unit name {u.name!r} is already a registered kind: give the new unit a new name "
              f"(e.g. {fresh!r}), or name {u.name!r} only as a child")
    for c in u.children:
      error = child_error(c, ctx, set(names))
      if error:
        return f"unit {u.name}: {error}; children may name the plan's units or {child_options(ctx)}"
      used += [c] if c in names else []
  if sorted(used) != sorted(names[1:]):
    return "every planned unit but the first must be the child of exactly one other planned unit"
  if ctx.mode != "mutation" and not plan_.units[0].children:
    return "the new root needs at least one child"
  return None


def keep_subtree(ref: str, ctx: Context):
  """The parent subtree a plan's `keep:P:PATH` (or `keep:PATH`, parent 0) names, or None."""
  parts = ref.split(":")
  parent, path = (0, parts[1]) if len(parts) == 2 else (parts[1], parts[2])
  try:
    where = prompts.parse_path(path)
    return None if where is None else ctx.trees[int(parent)].get(where)
  except (ValueError, IndexError):  # DesignError (a bad path) is a ValueError
    return None


def observe(session: Session, p: schemas.Proposal, unit: schemas.PlannedUnit, source: str,
            report_text: str):
  prompt = (f"Proposal:\n{prompts.render_proposal(p)}\n\nUnit {unit.name} ({unit.role}): "
            f"{unit.description}\n\nImplementation:\n```python\n{source}\n```\n\nThe checker passed "
            f"the design with it:\n{report_text}\n\nRate the implementation 1-5 against the proposal "
            f"and the unit's description (3 or more accepts), with a review and suggestions.")
  return _rating(session, "observer", prompt)
