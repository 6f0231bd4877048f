"""The LLM designer: GP picks the mode and the parents; the agents propose, review, plan, code unit
by unit and observe; the sandboxed checker judges every composed tree.

Implementation of a reviewed proposal (the original's "Viterbi-style" unit-by-unit loop):
- the planner lists the new units as a small tree (the first is the top: it replaces the selected
  unit in a mutation, or is the new root); units are coded children first, one at a time, each
  planned unit not yet written standing in as a pass-through placeholder code unit;
- each coder reply is linted and parsed (no process, no execution), declared (declarations only:
  this process holds the API key and never runs unit code), composed into the whole tree, typed,
  checked for novelty and run through `gab.sandbox.check_design` (a secret-free child process);
- a unit that passes is rated by the observer (accept at >= observe_pass); a failure of any kind
  (lint line, checker report with its messages, observer review) goes back to the coder, up to
  `unit_retries` tries per unit;
- a unit that exhausts its tries fails the implementation; the planner tries again with the
  failures fed back, and after `max_failed_implementations` the design is "challenging".
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from evolution import canonical
from evolution.designers import agents, prompts, schemas
from evolution.designers.context import Context
from evolution.designers.session import Session
from gab import codeunits, registry
from gab.tree import DesignError, Unit, design_to_json

Checker = Callable[[str, Context], dict[str, Any]]

PLACEHOLDER = '''"""Placeholder for the planned unit {name}, not written yet: runs its children in order."""
import flax.linen as nn
from gab.units.base import UnitModule

KIND = dict(name="Placeholder{name}", role="{role}", params={{}},
            slots=[{{"name": "children", "min_count": 0, "max_count": 8}}], reads=[], writes=[])


class Placeholder{name}(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    for i in range(len(self.unit.children)):
      x, z = self.child(i)(x, z)
    return x, z
'''


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
  """`gab.sandbox.check_design` on the design JSON, cached by the JSON (a resubmitted tree is not
  checked twice)."""
  cache: dict[str, dict[str, Any]] = {}

  def check(design_json: str, ctx: Context) -> dict[str, Any]:
    if design_json not in cache:
      from gab import sandbox  # pylint: disable=g-import-not-at-top
      cache[design_json] = sandbox.check_design(design_json, ctx.checker_cfg, ctx.rung, timeout_s=timeout_s,
                                                fingerprint=True)
    return cache[design_json]
  return check


class Implementer:
  """Composes, checks and accepts the units of one plan."""

  def __init__(self, session: Session, ctx: Context, cfg: Any, proposal: schemas.Proposal,
               plan: schemas.Plan, check: Checker):
    self.session, self.ctx, self.cfg, self.proposal, self.plan, self.check = \
        session, ctx, cfg, proposal, plan, check
    self.by_name = {u.name: u for u in plan.units}
    self.kinds: dict[str, str] = {}       # planned name -> kind (implemented)
    self.sources: dict[str, str] = {**ctx.stored_units, **ctx.sources}
    self.ratings: list[dict[str, Any]] = []
    self.tries = 0
    self.last: tuple[Unit, dict[str, Any]] | None = None

  def order(self) -> list[str]:
    out: list[str] = []

    def visit(name: str) -> None:
      for c in self.by_name[name].children:
        if c in self.by_name:
          visit(c)
      out.append(name)
    visit(self.plan.units[0].name)
    return out

  def _placeholder(self, name: str) -> str:
    source = PLACEHOLDER.format(name=name, role=self.by_name[name].role)
    kind = codeunits.declare(source)
    self.sources[kind] = source
    return kind

  def compose(self, kinds: dict[str, str]) -> Unit:
    def child(c: str) -> Unit:
      if c in self.by_name:
        return node(c)
      if c.startswith("keep:"):
        return agents.keep_subtree(c, self.ctx)
      return Unit.make(c)

    def node(name: str) -> Unit:
      kind = kinds.get(name) or self._placeholder(name)
      return Unit.make(kind, [child(c) for c in self.by_name[name].children])
    top = node(self.plan.units[0].name)
    if self.ctx.mode == "mutation":
      return self.ctx.trees[0].replace(prompts.parse_path(self.proposal.selection), top)
    return top

  def children_roles(self, name: str) -> list[str]:
    roles = []
    for c in self.by_name[name].children:
      if c in self.by_name:
        roles.append(self.by_name[c].role)
      elif c.startswith("keep:"):
        roles.append(registry.get(agents.keep_subtree(c, self.ctx).kind).role)
      else:
        roles.append(registry.get(c).role)
    return roles

  def attempt(self, name: str, source: str) -> tuple[bool, str, Unit | None, dict | None]:
    """(passed, feedback, tree, report) of one coder reply for the unit `name`."""
    unit = self.by_name[name]
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
    try:
      kind = codeunits.declare(cu)
    except DesignError as e:
      return False, f"The declaration was refused: {e}", None, None
    self.sources[kind] = source
    tree = self.compose({**self.kinds, name: kind})
    errors = registry.type_errors(tree)
    if errors:
      return False, "The composed tree is ill-typed:\n" + "\n".join(m for _, m in errors[:5]), tree, None
    tree = registry.normalize(tree)
    if canonical.canonical_id(tree) in self.ctx.known:
      return False, "The composed tree is identical to a design already in the store.", tree, None
    units = {k: self.sources[k] for k in codeunits.kinds_in(tree)}
    report = self.check(design_to_json(tree, units=units), self.ctx)
    self.last = (tree, report)
    if not report.get("passed"):
      return False, ("The checker rejected the composed design (lines refer to your unit's source):\n"
                     + prompts.render_report(report)), tree, report
    twin = self.ctx.fingerprints.get(report.get("fingerprint") or "")
    if twin is not None:
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
    self.kinds[name] = kind
    return True, "", tree, report

  def run(self) -> tuple[bool, str]:
    """(all units accepted, failure summary)."""
    for name in self.order():
      feedback: list[str] = []
      for t in range(int(self.cfg.unit_retries)):
        self.tries += 1
        reply, error = agents.code(self.session, self.proposal, self.plan, self.by_name[name],
                                   {self.kinds[n]: self.sources[self.kinds[n]] for n in self.kinds},
                                   self.children_roles(name), feedback, sorted(self.ctx.stored_units))
        if reply is None:
          feedback.append(f"Try {t + 1}: the reply was unusable: {error}")
          continue
        ok, why, _, _ = self.attempt(name, reply.source)
        if ok:
          break
        feedback.append(f"Try {t + 1}:\n```python\n{reply.source}\n```\n{why}")
      else:
        return False, f"unit {name}: {int(self.cfg.unit_retries)} tries failed; last: {feedback[-1][-600:]}"
    return True, ""


def implement(session: Session, ctx: Context, cfg: Any, proposal: schemas.Proposal,
              check: Checker) -> dict[str, Any]:
  """Plan and implement; up to `max_failed_implementations` implementations."""
  failures: list[str] = []
  plans, ratings, tries, last, last_sources = [], [], 0, None, {}
  for _ in range(int(cfg.max_failed_implementations)):
    plan, error = agents.plan(session, ctx, proposal, failures)
    if plan is None or error:
      failures.append(f"- the plan was unusable: {error}")
      continue
    plans.append(plan.model_dump())
    imp = Implementer(session, ctx, cfg, proposal, plan, check)
    ok, why = imp.run()
    ratings += imp.ratings
    tries += imp.tries
    if imp.last is not None:
      last, last_sources = imp.last, imp.sources
    if ok:
      tree, report = imp.last
      units = {k: imp.sources[k] for k in codeunits.kinds_in(tree)}
      return {"ok": True, "tree": tree, "report": report, "units": units, "plans": plans,
              "ratings": ratings, "tries": tries, "failures": failures}
    failures.append(f"- {why}")
  out = {"ok": False, "plans": plans, "ratings": ratings, "tries": tries, "failures": failures,
         "tree": None, "report": None, "units": {}}
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
  result = implement(session, ctx, cfg, proposal, check)
  artifacts.update(plans=result["plans"], ratings=result["ratings"], failures=result["failures"])
  info["attempts"] = result["tries"]
  status = "accepted" if result["ok"] else "challenging"
  tree, units = result["tree"], result["units"]
  where = f" at {proposal.selection}" if ctx.mode == "mutation" else ""
  return Outcome(status, "llm", tree, units, result["report"],
                 f"{proposal.title}{where}: {proposal.abstract}"[:300], info, artifacts)


def dumps(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, indent=1, default=str)
