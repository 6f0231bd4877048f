"""The agents: proposer, reviewer, planner, coder and observer, each one structured call.

Each function builds its role's prompt from the context and the history fed back to it, asks once
through the proposal's `Session`, and returns the validated reply or the error message to feed back.
The proposal loop (`propose`) is here too: up to `designer.proposal_attempts` proposals, each failed
review (or invalid reply) going into the next attempt's prompt; it passes at rating >= review_pass.
"""

from __future__ import annotations

import re
from typing import Any

from evolution.designers import prompts, schemas
from evolution.designers.context import Context
from evolution.designers.session import Session
from gab import registry

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def _parents_text(ctx: Context) -> str:
  if not ctx.parents:
    return "No parent: design a new block from scratch (a new root with at least one child)."
  parts = []
  for i, (d, tree) in enumerate(zip(ctx.parents, ctx.trees)):
    mine = {k: s for k, s in ctx.sources.items() if any(u.kind == k for _, u in tree.walk())}
    parts.append(f"Parent {i}: " + prompts.render_design(d, tree, mine, ctx.results[i]))
  return "\n\n".join(parts)


def _context_text(ctx: Context) -> str:
  text = _parents_text(ctx)
  if ctx.siblings:
    text += "\n\nSibling designs (other children of the parents):\n" + "\n".join(f"- {s}" for s in ctx.siblings)
  if ctx.similar:
    text += "\n\nThe most similar earlier proposals:\n" + "\n".join(f"- {s}" for s in ctx.similar)
  return text


def search(session: Session, ctx: Context) -> dict[str, Any] | None:
  """Optional literature search (Google Search grounding, free text, its own call)."""
  prompt = ("Search the literature for ideas that could improve this language-model block; list "
            "the most relevant papers and what to borrow from each.\n\n" + _parents_text(ctx))
  reply, _, error = session.ask("searcher", prompts.system("searcher"), prompt, None, search=True)
  if error:
    return {"error": error, "notes": "", "queries": [], "urls": []}
  g = reply.grounding or {}
  return {"notes": reply.text or "", "queries": g.get("queries", []), "urls": g.get("urls", [])}


def _selection_error(p: schemas.Proposal, ctx: Context, allow_root: bool) -> str | None:
  if ctx.mode != "mutation":
    return None
  path = prompts.parse_path(p.selection)
  if path is None:
    return f"selection {p.selection!r} is not a unit path like 0.0.1"
  try:
    ctx.trees[0].get(path)
  except Exception as e:  # pylint: disable=broad-except
    return f"selection {p.selection!r} names no unit of the parent: {e}"
  if path == () and not allow_root:
    return "selection must not be the root: pick one unit inside the parent's tree"
  return None


def propose(session: Session, ctx: Context, cfg: Any, notes: dict[str, Any] | None):
  """(proposal, reviews, attempts): the first proposal whose review passes, or None."""
  history: list[str] = []
  reviews: list[dict[str, Any]] = []
  task = {"mutation": "Change ONE unit of parent 0 (name its path in `selection`; the root is not "
                      "allowed); every other unit stays as it is.",
          "crossover": "Recombine units of the parents under a new root (`selection` empty).",
          "scratch": "Design a new block: a new root with children, reusing existing kinds where "
                     "useful (`selection` empty)."}[ctx.mode]
  for attempt in range(int(cfg.proposal_attempts)):
    prompt = (f"Mode: {ctx.mode}. {task}\n\n{_context_text(ctx)}\n\nUnit kinds available:\n"
              f"{prompts.render_kinds(sorted(ctx.stored_units))}")
    if notes and notes.get("notes"):
      prompt += f"\n\nLiterature notes:\n{notes['notes']}"
    if history:
      prompt += "\n\nYour earlier attempts and why they failed:\n" + "\n\n".join(history)
    _, p, error = session.ask("proposer", prompts.system("proposer"), prompt, schemas.Proposal)
    if p is not None:
      error = _selection_error(p, ctx, bool(cfg.allow_root)) or (
          None if _IDENT.match(p.title) else f"title {p.title!r} must be an identifier (a design name)")
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


def _rating(session: Session, role: str, prompt: str):
  _, r, error = session.ask(role, prompts.system(role), prompt, schemas.Rating)
  if r is not None and not 1 <= r.rating <= 5:
    return None, f"rating {r.rating} is outside 1..5"
  return r, error


def review(session: Session, ctx: Context, p: schemas.Proposal):
  prompt = (f"Mode: {ctx.mode}.\n\nProposal:\n{prompts.render_proposal(p)}\n\n{_context_text(ctx)}"
            "\n\nRate the proposal 1-5 with a review and suggestions.")
  return _rating(session, "reviewer", prompt)


def plan(session: Session, ctx: Context, p: schemas.Proposal, failures: list[str]):
  stored = "\n".join(f"- {k}" for k in sorted(ctx.stored_units)) or "- (none)"
  prompt = (f"Mode: {ctx.mode}.\n\nProposal:\n{prompts.render_proposal(p)}\n\n{_parents_text(ctx)}\n\n"
            f"Built-in unit kinds:\n{prompts.render_kinds(sorted(ctx.stored_units))}\n\nCode units in the store:\n{stored}\n\n"
            "List the new units to write. The first is the top of the new material: in a mutation "
            "it replaces the selected unit, otherwise it is the new root (with at least one child). "
            "Each unit's `children` name, in order: other planned units, existing kinds to reuse "
            "(leaf kinds, built with their defaults), or `keep:P:PATH` for parent P's subtree at "
            "PATH (e.g. keep:0:0.0.1).")
  if failures:
    prompt += "\n\nEarlier implementations of this proposal failed:\n" + "\n".join(failures)
  _, plan_, error = session.ask("planner", prompts.system("planner"), prompt, schemas.Plan)
  return plan_, error or (plan_error(plan_, ctx) if plan_ is not None else None)


def plan_error(plan_: schemas.Plan, ctx: Context) -> str | None:
  """Why a plan cannot be built into a tree, or None."""
  if not plan_.units:
    return "the plan lists no units"
  names = [u.name for u in plan_.units]
  if len(set(names)) != len(names):
    return f"unit names repeat: {names}"
  used: list[str] = []
  for u in plan_.units:
    if not _IDENT.match(u.name) or "@" in u.name:
      return f"unit name {u.name!r} must be an identifier"
    if u.name in registry.kinds():
      return f"unit name {u.name!r} is already a registered kind: choose a new name or reuse it as a child"
    if u.role not in registry.ROLES:
      return f"unit {u.name}: role {u.role!r} is not one of {list(registry.ROLES)}"
    for c in u.children:
      if c in names:
        used.append(c)
      elif c.startswith("keep:"):
        if keep_subtree(c, ctx) is None:
          return f"unit {u.name}: child {c!r} names no subtree of a parent"
      elif c not in registry.kinds() and c not in ctx.stored_units:
        return f"unit {u.name}: child {c!r} is neither a planned unit, a known kind nor keep:P:PATH"
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


def code(session: Session, p: schemas.Proposal, plan_: schemas.Plan, unit: schemas.PlannedUnit,
         done: dict[str, str], children_roles: list[str], feedback: list[str], code_kinds: list[str]):
  prompt = (f"Proposal:\n{prompts.render_proposal(p)}\n\nPlan:\n" +
            "\n".join(f"- {u.name} ({u.role}): {u.description}; children {u.children}" for u in plan_.units) +
            f"\n\nImplement the unit {unit.name} (role {unit.role}): {unit.description}\n"
            f"KIND name must be \"{unit.name}\" and role \"{unit.role}\". ")
  if children_roles:
    prompt += (f"It has {len(children_roles)} children, of roles {children_roles}, in this order: "
               "declare slots that accept them and call them with self.child(i)(x, z).")
  else:
    prompt += "It has no children (slots=[])."
  if done:
    prompt += "\n\nUnits already implemented:\n" + prompts.render_sources(done)
  prompt += f"\n\nUnit kinds available:\n{prompts.render_kinds(code_kinds)}"
  if feedback:
    prompt += "\n\nYour earlier attempts at this unit failed; fix them:\n" + "\n\n".join(feedback[-3:])
  return session.ask("coder", prompts.system("coder"), prompt, schemas.CodeReply)[1:]


def observe(session: Session, p: schemas.Proposal, unit: schemas.PlannedUnit, source: str,
            report_text: str):
  prompt = (f"Proposal:\n{prompts.render_proposal(p)}\n\nUnit {unit.name} ({unit.role}): "
            f"{unit.description}\n\nImplementation:\n```python\n{source}\n```\n\nThe checker passed "
            f"it:\n{report_text}\n\nRate the implementation 1-5 against the proposal.")
  return _rating(session, "observer", prompt)
