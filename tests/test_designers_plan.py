"""Plans: validation, the children-first order and composition with pass-through placeholders
(declarations only: nothing here runs unit code)."""

from evolution.designers import agents, context, schemas
from evolution.designers.fake_gemini import RESIDUAL_CHAIN, TOKEN_SHIFT
from evolution.designers.pipeline import Implementer
from gab import codeunits, registry, seeds


def ctx(mode):
  gpt = seeds.seed("gpt")
  return context.Context(mode, [], [gpt, gpt] if mode == "crossover" else [gpt], {}, {}, {}, set(),
                         [], [], [], {})


def plan(*units):
  return schemas.Plan(units=[schemas.PlannedUnit(name=n, role=r, description="", children=c)
                             for n, r, c in units], rationale="")


def test_plan_errors_name_what_cannot_be_built():
  c = ctx("crossover")
  assert agents.plan_error(plan(("Root", "block", ["Mix", "keep:1:1"]), ("Mix", "sequence_mixer", [])), c) is None
  assert "repeat" in agents.plan_error(plan(("A", "block", []), ("A", "norm", [])), c)
  assert "neither a planned unit" in agents.plan_error(plan(("Root", "block", ["Nope"])), c)
  assert "names no subtree" in agents.plan_error(plan(("Root", "block", ["keep:1:7"])), c)
  assert "at least one child" in agents.plan_error(plan(("Root", "block", [])), c)
  assert "exactly one other" in agents.plan_error(plan(("Root", "block", ["GatedMLP"]), ("Mix", "norm", [])), c)
  assert "already a registered kind" in agents.plan_error(plan(("Attention", "sequence_mixer", [])), ctx("mutation"))


def test_units_are_coded_children_first_and_unwritten_ones_are_placeholders():
  c = ctx("crossover")
  p = plan(("Chain", "block", ["Mix", "keep:1:1"]), ("Mix", "sequence_mixer", []))
  proposal = schemas.Proposal(title="T", abstract="", motivation="", plan="", selection="", variant_name="")
  imp = Implementer(None, c, None, proposal, p, None)
  assert imp.order() == ["Mix", "Chain"]
  mix = codeunits.declare(TOKEN_SHIFT.format(title="Mix", name="Mix", mix=0.5))
  tree = imp.compose({"Mix": mix})
  assert tree.kind.startswith("PlaceholderChain@") and [u.kind for u in tree.children] == [mix, "Residual"]
  assert registry.type_errors(tree) == []
  chain = codeunits.declare(RESIDUAL_CHAIN.format(name="Chain"))
  full = imp.compose({"Mix": mix, "Chain": chain})
  assert full.kind == chain and full.children[1] == seeds.seed("gpt").children[1]
  assert set(codeunits.kinds_in(full)) == {mix, chain}
  mutated = Implementer(None, ctx("mutation"), None, proposal.model_copy(update={"selection": "0.0.1"}),
                        plan(("Mix", "sequence_mixer", [])), None).compose({"Mix": mix})
  assert mutated.get((0, 0, 1)).kind == mix and mutated.get((1,)) == seeds.seed("gpt").get((1,))
