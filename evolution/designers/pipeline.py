"""The LLM designer: GP picks the mode and the parents; the agents propose, review, plan, code unit
by unit and observe; the sandboxed checker judges every composed tree.

Implementation of a reviewed proposal (the original's unit-by-unit loop), top-down:
- the planner lists the new units as a small tree; the first is the top: it replaces the selected
  unit in a mutation, or is the new root. The top is written first, then each unit's new children
  in order, so every unit is written knowing its parent's code;
- a planned unit not written yet stands in its parent as a placeholder that keeps the residual
  stream intact: identity for a channel mixer or block, a parameter-free RMS normalisation for a
  norm, and for a sequence mixer the mean of the current and previous position (a leaf sequence
  mixer must mix: the checker's forward check); the coder may declare other children than the
  plan's (new ones are planned there and written after it);
- each coder reply is linted and parsed (no process, no execution), declared (declarations only:
  this process holds the API key and never runs unit code), composed into the whole tree, typed,
  and run through `gab.sandbox.check_design` (a secret-free child process). While placeholders
  remain the parameter budget is not held against the unit (the design is not whole yet: its size
  is judged once it is); the last unit's check is the full one, novelty included;
- a unit that passes is rated by the observer (accept at >= observe_pass); a failure of any kind
  (lint line, checker report with its messages, observer review) goes back to the coder, up to
  `unit_retries` tries per unit;
- a plan that cannot be built is asked again with its error (`agents.PLAN_ASKS` asks); after that
  the implementation goes on with the fallback plan, the proposal's one unit (`agents.fallback_plan`);
- a unit that exhausts its tries fails the implementation; the planner tries again with the
  failures fed back, and after `max_failed_implementations` the design is "challenging".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from evolution import canonical
from evolution.designers import agents, coder, prompts, schemas
from evolution.designers.context import Context
from evolution.designers.session import Session
from gab import codeunits, registry
from gab.tree import DesignError, Unit, design_to_json

Checker = Callable[[str, Context, bool], dict[str, Any]]

_PLACEHOLDER = '''"""Pending{Role}: stands in for a planned {role} not written yet ({what})."""
import flax.linen as nn
import jax
import jax.numpy as jnp
from gab.units.base import UnitModule

KIND = dict(name="Pending{Role}", role="{role}", params={{}}, slots=[], reads=[], writes=[])


class Pending{Role}(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    return {body}, z
'''
PLACEHOLDER_BODIES = {
    "block": ("identity", "x"),
    "channel_mixer": ("identity", "x"),
    "norm": ("RMS normalisation without parameters",
             "(x * jax.lax.rsqrt(jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)"
             " + 1e-6)).astype(x.dtype)"),
    "sequence_mixer": ("the mean of each position and the one before it",
                       "0.5 * (x + jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1])"),
}
RELAXED_BUDGET = 1e9   # `size_tolerance` while placeholders remain: the budget is the whole design's


def verdict(why: str, report: dict[str, Any] | None) -> str:
  """What one try came to, as a category: accepted, reply (unusable), lint, read (parse, KIND,
  declaration, declared children), typing, novelty, observer, or check:NAME (the first failed check)."""
  if not why:
    return "accepted"
  if report is not None and not report.get("passed"):
    failed = [c["name"] for c in report.get("checks", []) if c.get("status") == "fail"]
    return f"check:{failed[0] if failed else 'unknown'}"
  for prefix, name in (("the reply was unusable", "reply"), ("The lint", "lint"), ("The composed tree is "
                       "ill-typed", "typing"), ("The block is ill-typed", "typing"), ("The observer", "observer")):
    if why.startswith(prefix):
      return name
  if "identical to a design" in why or "same function" in why:
    return "novelty"
  return "read"


def placeholder_source(role: str) -> str:
  what, body = PLACEHOLDER_BODIES[role]
  words = role.title().replace("_", "")
  return _PLACEHOLDER.format(Role=words, role=role, what=what, body=body)


@dataclasses.dataclass
class Outcome:
  """A proposal's result: status accepted | challenging | unreviewed | over_budget | error."""
  status: str
  designer: str
  tree: Unit | None = None
  units: dict[str, str] = dataclasses.field(default_factory=dict)
  report: dict[str, Any] | None = None
  description: str = ""
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)


def sandbox_checker(timeout_s: float) -> Checker:
  """`gab.sandbox.check_design` on the design JSON (with the budget relaxed for a design that is
  not whole yet), cached by the JSON (a resubmitted tree is not checked twice)."""
  cache: dict[tuple[str, bool], dict[str, Any]] = {}

  def check(design_json: str, ctx: Context, whole: bool = True) -> dict[str, Any]:
    if (design_json, whole) not in cache:
      from gab import sandbox  # pylint: disable=g-import-not-at-top
      cfg = ctx.checker_cfg if whole else {**ctx.checker_cfg, "size_tolerance": RELAXED_BUDGET}
      cache[(design_json, whole)] = sandbox.check_design(design_json, cfg, ctx.rung, timeout_s=timeout_s,
                                                         fingerprint=whole)
    return cache[(design_json, whole)]
  return check


class Implementer:
  """Composes, checks and accepts the units of one plan, top-down."""

  def __init__(self, session: Session, ctx: Context, cfg: Any, proposal: schemas.Proposal,
               review: dict[str, Any] | None, plan: schemas.Plan, check: Checker):
    self.session, self.ctx, self.cfg, self.proposal, self.review, self.check = \
        session, ctx, cfg, proposal, review, check
    self.top = plan.units[0].name
    self.planned = {u.name: u for u in plan.units}
    self.children = {u.name: list(u.children) for u in plan.units}
    self.kinds: dict[str, str] = {}       # planned name -> kind (written and accepted)
    self.sources: dict[str, str] = {**ctx.stored_units, **ctx.sources}
    self.placeholders = {role: self._declare(placeholder_source(role)) for role in registry.ROLES}
    self.ratings: list[dict[str, Any]] = []
    self.tries = 0
    self.verdicts: list[str] = []          # one category per try (`verdict`)
    self.last: tuple[Unit, dict[str, Any]] | None = None

  def _declare(self, unit: str | codeunits.CodeUnit) -> str:
    kind = codeunits.declare(unit)
    self.sources[kind] = codeunits.unit(kind).source
    return kind

  def compose(self, kinds: dict[str, str], children: dict[str, list[str]] | None = None,
              planned: dict[str, schemas.PlannedUnit] | None = None) -> Unit:
    """The design with the written units `kinds` and placeholders for the planned units not written."""
    children, planned = children or self.children, planned or self.planned

    def node(name: str) -> Unit:
      if name not in kinds:
        return Unit.make(self.placeholders[planned[name].role])
      return Unit.make(kinds[name], [child(c) for c in children[name]])

    def child(c: str) -> Unit:
      if c in planned:
        return node(c)
      if c.startswith("keep:"):
        return agents.keep_subtree(c, self.ctx)
      return Unit.make(c)
    top = node(self.top)
    if self.ctx.mode == "mutation":
      return self.ctx.trees[0].replace(prompts.parse_path(self.proposal.selection), top)
    return top

  def pending(self, kinds: dict[str, str], children: dict[str, list[str]],
              planned: dict[str, schemas.PlannedUnit]) -> list[str]:
    """Planned units the tree reaches that are not written yet, top-down."""
    out, stack = [], [self.top]
    while stack:
      name = stack.pop(0)
      if name not in kinds:
        out.append(name)
        continue
      stack[0:0] = [c for c in children[name] if c in planned]
    return out

  def path_of(self, name: str, tree: Unit) -> tuple[int, ...]:
    """Where the planned unit `name` sits in `tree` (found by walking the plan from the top)."""
    base = prompts.parse_path(self.proposal.selection) if self.ctx.mode == "mutation" else ()

    def find(at: str, path: tuple[int, ...]):
      if at == name:
        return path
      if at not in self.kinds:
        return None
      for i, c in enumerate(self.children[at]):
        if c in self.planned and (found := find(c, path + (i,))) is not None:
          return found
      return None
    return find(self.top, base)

  def job(self, name: str) -> coder.Job:
    top_of_mutation = self.ctx.mode == "mutation" and name == self.top
    tree = self.ctx.trees[0] if top_of_mutation else self.compose(self.kinds)   # the unit it replaces
    lines = []
    for u in self.planned.values():
      state = "written" if u.name in self.kinds else "to write" if u.name != name else "WRITING NOW"
      lines.append(f"- {u.name} ({u.role}, {state}): {u.description}; children {self.children[u.name]}")
    kids = [coder.child_line(c, self.planned, self.kinds, self.ctx, agents.keep_subtree)
            for c in self.children[name]]
    return coder.Job(self.ctx, self.proposal, self.review, lines, self.planned[name], tree,
                     self.path_of(name, tree), kids, self.sources, set(self.placeholders.values()))

  def declared_children(self, name: str, decl: list[schemas.ChildDecl]) -> tuple[dict, dict, str]:
    """(planned units, children) with the coder's declared children of `name`, or an error."""
    planned, children = dict(self.planned), {k: list(v) for k, v in self.children.items()}
    names = []
    for d in decl:
      c = d.name.strip()
      error = agents.child_error(c, self.ctx, set(planned))
      if error is not None:
        if c in registry.kinds():
          return planned, children, f"declared {error}"
        if not agents.IDENT.match(c):
          return planned, children, f"declared child {c!r} is neither a planned unit, a known kind, " \
                                    f"keep:P:PATH nor a new unit name (an identifier)"
        planned[c] = schemas.PlannedUnit(name=c, role=d.role, description=d.description, children=[])
        children[c] = []
      if c == name:   # the tree would contain itself
        return planned, children, f"declared child {c!r} is the unit itself"
      if c in planned and (c in self.kinds or any(c in v for k, v in children.items() if k != name)):
        return planned, children, f"declared child {c!r} already has a place in the design"
      names.append(c)
    if len(planned) > agents.MAX_PLANNED_UNITS + 2:
      return planned, children, f"too many new units ({len(planned)}); reuse existing kinds"
    children[name] = names
    return planned, children, ""

  def attempt(self, name: str, source: str, decl: list[schemas.ChildDecl] | None):
    """(passed, feedback, tree, report) of one coder reply for the unit `name`."""
    unit = self.planned[name]
    lint = codeunits.lint(source)
    if lint:
      return False, "The lint rejected the code:\n" + "\n".join(lint), None, None
    try:
      cu = codeunits.parse(source)
    except DesignError as e:
      return False, f"The code unit could not be read: {e}", None, None
    if cu.name != unit.name or cu.declaration.get("role") != unit.role:
      return False, (f"KIND declares name {cu.name!r} and role {cu.declaration.get('role')!r}; the plan "
                     f"asks for name {unit.name!r} and role {unit.role!r}"), None, None
    planned, children, error = self.declared_children(name, decl) if decl else (self.planned, self.children, "")
    if error:
      return False, f"The declared children were refused: {error}", None, None
    try:
      kind = self._declare(cu)
    except DesignError as e:
      return False, f"The declaration was refused: {e}", None, None
    kinds = {**self.kinds, name: kind}
    tree = self.compose(kinds, children, planned)
    whole = not self.pending(kinds, children, planned)
    errors = registry.type_errors(tree)
    if errors:
      return False, "The composed tree is ill-typed:\n" + "\n".join(m for _, m in errors[:5]), tree, None
    tree = registry.normalize(tree)
    if whole and canonical.canonical_id(tree) in self.ctx.known:
      return False, "The composed tree is identical to a design already in the store.", tree, None
    units = {k: self.sources[k] for k in codeunits.kinds_in(tree)}
    report = self.check(design_to_json(tree, units=units), self.ctx, whole)
    self.last = (tree, report)
    if not report.get("passed"):
      return False, ("The checker rejected the composed design (lines refer to your unit's source):\n"
                     + prompts.render_report(report)), tree, report
    twin = self.ctx.fingerprints.get(report.get("fingerprint") or "")
    if whole and twin is not None:
      return False, (f"The design computes the same function as stored design {twin} (equal outputs "
                     f"at initialisation): change what the unit computes, not only how it is written."
                     ), tree, report
    rating, error = agents.observe(self.session, self.proposal, unit, source, prompts.render_report(report))
    if rating is None:
      return False, f"The observer's review could not be read: {error}", tree, report
    self.ratings.append({"unit": name, "kind": kind, **rating.model_dump()})
    if rating.rating < int(self.cfg.observe_pass):
      return False, (f"The observer rated it {rating.rating}/5: {rating.review}\nSuggestions: "
                     f"{rating.suggestions}"), tree, report
    self.planned, self.children, self.kinds = planned, children, kinds
    return True, "", tree, report

  def run(self) -> tuple[bool, str]:
    """(all units accepted, failure summary)."""
    while todo := self.pending(self.kinds, self.children, self.planned):
      name = todo[0]
      feedback: list[str] = []
      for t in range(int(self.cfg.unit_retries)):
        self.tries += 1
        source, decl, error = coder.code(self.session, self.job(name), feedback)
        if source is None:
          feedback.append(f"Try {t + 1}: the reply was unusable: {error}")
          self.verdicts.append("reply")
          continue
        ok, why, _, report = self.attempt(name, source, decl)
        self.verdicts.append(verdict(why, report))
        if ok:
          break
        feedback.append(f"Try {t + 1}: {why}\nIts code:\n```python\n{source.rstrip()}\n```")
      else:
        return False, f"unit {name}: {int(self.cfg.unit_retries)} tries failed; last: {feedback[-1][:600]}"
    return True, ""


def implement(session: Session, ctx: Context, cfg: Any, proposal: schemas.Proposal,
              review: dict[str, Any] | None, check: Checker) -> dict[str, Any]:
  """Plan and implement; up to `max_failed_implementations` implementations."""
  failures: list[str] = []
  plans, ratings, tries, last, last_sources, verdicts = [], [], 0, None, {}, []
  for _ in range(int(cfg.max_failed_implementations)):
    plan, error = agents.plan(session, ctx, proposal, failures)
    if error:
      failures.append(f"- the plan was unusable: {error}")
      plan = agents.fallback_plan(ctx, proposal)
    plans.append({**plan.model_dump(), "fallback": bool(error)})
    imp = Implementer(session, ctx, cfg, proposal, review, plan, check)
    ok, why = imp.run()
    ratings += imp.ratings
    tries += imp.tries
    verdicts += imp.verdicts
    if imp.last is not None:
      last, last_sources = imp.last, imp.sources
    if ok:
      tree, report = imp.last
      units = {k: imp.sources[k] for k in codeunits.kinds_in(tree)}
      return {"ok": True, "tree": tree, "report": report, "units": units, "plans": plans,
              "ratings": ratings, "tries": tries, "failures": failures, "verdicts": verdicts}
    failures.append(f"- {why}")
  out = {"ok": False, "plans": plans, "ratings": ratings, "tries": tries, "failures": failures,
         "tree": None, "report": None, "units": {}, "verdicts": verdicts}
  if last is not None:
    out["tree"], out["report"] = last
    out["units"] = {k: last_sources[k] for k in codeunits.kinds_in(last[0])}
  return out


def design(session: Session, ctx: Context, cfg: Any, check: Checker) -> Outcome:
  """One proposal of the LLM pipeline, from the optional search to the accepted child."""
  notes = agents.search(session, ctx) if cfg.search else None
  proposal, reviews, attempts = agents.propose(session, ctx, cfg, notes)
  artifacts: dict[str, Any] = {"reviews": reviews}
  if notes is not None:
    artifacts["search"] = notes
  info = {"designer": "llm", "title": None, "rating": reviews[-1]["rating"] if reviews else None,
          "proposal_attempts": attempts}
  if proposal is None:
    return Outcome("unreviewed", "llm", info=info, artifacts=artifacts)
  artifacts["proposal"] = {**proposal.model_dump(), "mode": ctx.mode,
                           "parents": [p["id"] for p in ctx.parents],
                           "search": notes if notes is not None else None}
  info["title"] = proposal.title
  result = implement(session, ctx, cfg, proposal, reviews[-1] if reviews else None, check)
  artifacts.update(plans=result["plans"], ratings=result["ratings"], failures=result["failures"])
  info["attempts"], info["verdicts"] = result["tries"], result["verdicts"]
  status = "accepted" if result["ok"] else "challenging"
  tree, units = result["tree"], result["units"]
  where = f" at {proposal.selection}" if ctx.mode == "mutation" else ""
  return Outcome(status, "llm", tree, units, result["report"],
                 f"{proposal.title}{where}: {proposal.abstract}"[:300], info, artifacts)
