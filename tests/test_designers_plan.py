"""Plans: validation, the top-down order, composition with placeholders, the coder's prompt and
reply (declarations only: nothing here runs unit code)."""

import json

from evolution.designers import agents, coder, context, pipeline, schemas
from evolution.designers import config as dconfig
from evolution.designers.client import GeminiTransport
from evolution.designers.fake_gemini import RESIDUAL_CHAIN, TOKEN_SHIFT, FakeGemini, fenced
from evolution.designers.pipeline import Implementer
from evolution.designers.record import Recorder
from evolution.designers.session import Session
from evolution.store import Store
from gab import checker, codeunits, registry, seeds


def ctx(mode):
  gpt = seeds.seed("gpt")
  rung = dict(d_model=32, n_blocks=1, target_params=20928, batch_size=8, seq_len=64)
  return context.Context(mode, [], [gpt, gpt] if mode == "crossover" else [gpt], {},
                         checker.default_config().to_dict(), rung, set(), [], [], ["d: none"], {})


def plan(*units):
  return schemas.Plan(units=[schemas.PlannedUnit(name=n, role=r, description="", children=c)
                             for n, r, c in units], rationale="")


PROPOSAL = schemas.Proposal(title="T", abstract="", motivation="", plan="", selection="", variant_name="")


def test_plan_errors_name_what_cannot_be_built():
  c = ctx("crossover")
  assert agents.plan_error(plan(("Root", "block", ["Mix", "keep:1:1"]), ("Mix", "sequence_mixer", [])), c) is None
  assert "repeat" in agents.plan_error(plan(("A", "block", []), ("A", "norm", [])), c)
  assert "neither a planned unit" in agents.plan_error(plan(("Root", "block", ["Nope"])), c)
  assert "names no subtree" in agents.plan_error(plan(("Root", "block", ["keep:1:7"])), c)
  assert "at least one child" in agents.plan_error(plan(("Root", "block", [])), c)
  assert "exactly one other" in agents.plan_error(plan(("Root", "block", ["GatedMLP"]), ("Mix", "norm", [])), c)
  assert "already a registered kind" in agents.plan_error(plan(("Attention", "sequence_mixer", [])), ctx("mutation"))
  needs = agents.plan_error(plan(("Root", "block", ["Residual"])), ctx("mutation"))  # Residual needs a body
  assert "'Residual' is a kind that needs children (body (1))" in needs and "leaf kinds Attention" in needs


def test_the_code_of_every_built_in_kind_shown_to_a_coder_imports_only_what_the_lint_allows():
  from evolution.designers import contract  # pylint: disable=g-import-not-at-top
  for kind in sorted(k for k in registry.kinds() if not codeunits.is_code_kind(k)):
    text = contract.source(kind, {})
    assert text is not None, kind
    imports = [line for line in codeunits.lint(text) if "import" in line]
    assert not imports, (kind, imports)


def test_a_multi_unit_plan_is_coded_top_down_under_placeholders_that_keep_the_residual_stream():
  c = ctx("crossover")
  p = plan(("Chain", "block", ["Mix", "Gated", "keep:1:1"]), ("Mix", "sequence_mixer", []),
           ("Gated", "block", ["Norm"]), ("Norm", "norm", []))
  imp = Implementer(None, c, None, PROPOSAL, None, p, None)
  assert imp.pending(imp.kinds, imp.children, imp.planned) == ["Chain"]   # the root first
  assert imp.compose({}).kind.startswith("PendingBlock@")
  chain = codeunits.declare(RESIDUAL_CHAIN.format(name="Chain"))
  imp.kinds["Chain"] = chain
  assert imp.pending(imp.kinds, imp.children, imp.planned) == ["Mix", "Gated"]
  tree = imp.compose(imp.kinds)
  assert tree.kind == chain
  assert [u.kind.split("@")[0] for u in tree.children] == ["PendingSequenceMixer", "PendingBlock", "Residual"]
  assert tree.children[2] == seeds.seed("gpt").children[1] and registry.type_errors(tree) == []
  assert imp.path_of("Gated", tree) == (1,)
  job = imp.job("Mix")
  assert job.path == (0,) and "you are writing Mix" in coder.prompt(job, [])[0]
  mix = codeunits.declare(TOKEN_SHIFT.format(title="Mix", name="Mix", mix=0.5))
  imp.kinds["Mix"] = mix
  assert imp.pending(imp.kinds, imp.children, imp.planned) == ["Gated"]   # Norm: once Gated is
  gated = codeunits.declare(RESIDUAL_CHAIN.format(name="Gated"))
  imp.kinds["Gated"] = gated
  tree = imp.compose(imp.kinds)
  assert tree.children[1].kind == gated and tree.children[1].children[0].kind.startswith("PendingNorm@")
  assert imp.pending(imp.kinds, imp.children, imp.planned) == ["Norm"]
  assert imp.path_of("Norm", tree) == (1, 0)
  for role in registry.ROLES:   # the placeholders are code units like any other: lint-clean
    assert codeunits.lint(pipeline.placeholder_source(role)) == []


def test_a_mutation_top_replaces_the_selected_unit_and_the_coder_sees_its_code_and_neighbours():
  c = ctx("mutation")
  proposal = PROPOSAL.model_copy(update={"selection": "0.0.1"})
  imp = Implementer(None, c, None, proposal, {"rating": 4, "review": "sound", "suggestions": ""},
                    plan(("Mix", "sequence_mixer", ["CausalConv"])), None)
  text, short = coder.prompt(imp.job("Mix"), ["Try 1: The lint rejected the code:\nline 3: forbidden import os"])
  assert "Mix replaces this unit" in text and "class Attention(UnitModule)" in text   # the unit replaced
  assert "class RMSNorm(UnitModule)" in text and "class Sequence(UnitModule)" in text  # its neighbours
  assert "class CausalConv(UnitModule)" in text                                       # its child's code
  assert "Review (4/5): sound" in text and "z['positions'] (the language model)" in text
  assert "parameters +-20%" in text and "forbidden import os" in text and "forbidden import os" in short
  assert "class Attention(UnitModule)" not in short
  mix = codeunits.declare(TOKEN_SHIFT.format(title="Mix", name="Mix", mix=0.5).replace("slots=[]", "slots=[{\"name\": \"inner\"}]"))
  mutated = imp.compose({"Mix": mix})
  assert mutated.get((0, 0, 1)).kind == mix and mutated.get((0, 0, 1, 0)).kind == "CausalConv"
  assert mutated.get((1,)) == seeds.seed("gpt").get((1,))


def test_the_coder_answers_in_markdown_with_optional_children():
  source = TOKEN_SHIFT.format(title="Mix", name="Mix", mix=0.5)
  got, children, error = schemas.code_reply(fenced(source))
  assert got == source and children is None and error is None
  text = fenced(source) + '\n```json\n[{"name": "Helper", "role": "channel_mixer", "description": "d"}]\n```'
  got, children, error = schemas.code_reply(text)
  assert got == source and [ch.name for ch in children] == ["Helper"] and children[0].role == "channel_mixer"
  assert schemas.code_reply("no code here")[2] == "the reply has no ```python code block"
  assert schemas.code_reply("```python\nKIND = dict(\n")[0] == "KIND = dict(\n"   # cut off: still read
  # A real coder (Qwen2.5-Coder-1.5B) opened its docstring in one fence and nested its unit in a
  # second: paired in order, the fences made its closing prose the "code".
  nested = ('```python\n"""Mix: a token shift.\n\nThe unit is defined as follows:\n\n' + fenced(source)
            + '\n\nThis unit mixes each position with the one before it.\n```')
  assert schemas.code_reply(nested)[0] == source


def test_a_refused_plan_is_asked_again_with_its_error_then_the_fallback_is_the_proposals_unit(tmp_path):
  def unit(name, children):
    return {"units": [{"name": name, "role": "channel_mixer", "description": "d", "children": children}],
            "rationale": ""}
  script = {"planner": [{"json": unit("GatedMLP", [])}, {"json": unit("Wide", ["Residual"])},
                        {"json": unit("Wide", ["Residual"])}, {"json": unit("Wide", [])}]}
  cfg = dconfig.default_config()
  cfg.retry_initial_s, cfg.timeout_s = 0.01, 5.0
  proposal = PROPOSAL.model_copy(update={"title": "WideMLP", "selection": "1.0.1"})
  with FakeGemini(script, fallback=None) as fake, Store.open(str(tmp_path)) as store:
    cfg.base_url = fake.url
    recorder = Recorder(store, dconfig.parse_pricing(cfg.pricing), transport=GeminiTransport(cfg, "k"))
    session = Session(recorder, cfg, 0)
    _, error = agents.plan(session, ctx("mutation"), proposal, [])
    asks = [json.dumps(r["body"]) for r in fake.requests]
    got, again = agents.plan(session, ctx("mutation"), proposal, ["- the plan was unusable: " + error])
  assert len(asks) == agents.PLAN_ASKS == 2 and "refused" not in asks[0]
  assert "leaf kinds Attention" in asks[0] and "keep:0:1.0.1 (GatedMLP)" in asks[0]
  assert "already a registered kind" in asks[1] and "'WideMLP'" in asks[1]   # a name to use instead
  assert "'Residual' is a kind that needs children" in error
  assert again is None and got.units[0].name == "Wide"   # the second ask of the next implementation


def test_the_fallback_plan_is_the_proposals_one_unit_with_the_children_it_must_have():
  p = PROPOSAL.model_copy(update={"title": "Mixer", "plan": "mix", "selection": "0.0"})
  mutation = agents.fallback_plan(ctx("mutation"), p)
  assert [(u.name, u.role, u.children) for u in mutation.units] == [("Mixer", "block", ["keep:0:0.0.0", "keep:0:0.0.1"])]
  crossover = agents.fallback_plan(ctx("crossover"), p.model_copy(update={"selection": ""}))
  assert crossover.units[0].children == ["keep:0:0", "keep:1:1"] and crossover.units[0].role == "block"
  assert agents.plan_error(mutation, ctx("mutation")) is None and agents.plan_error(crossover, ctx("crossover")) is None
  scratch = context.Context("scratch", [], [], {}, {}, {}, set(), [], [], [], {})
  assert agents.fallback_plan(scratch, p).units[0].children == []   # a whole block in one unit


def test_a_unit_may_not_declare_itself_or_a_written_unit_as_its_child():
  c = ctx("crossover")
  imp = Implementer(None, c, None, PROPOSAL, None, plan(("Chain", "block", ["Mix"]), ("Mix", "sequence_mixer", [])), None)
  itself = [schemas.ChildDecl(name="Chain", role="block")]
  assert "is the unit itself" in imp.declared_children("Chain", itself)[2]   # once composed it never ended
  imp.kinds["Chain"] = codeunits.declare(RESIDUAL_CHAIN.format(name="Chain"))
  assert "already has a place" in imp.declared_children("Mix", itself)[2]
  assert imp.declared_children("Mix", [schemas.ChildDecl(name="keep:0:0.0.0")])[2] == ""
