"""The LLM designer end to end through the loop: the real google-genai client against the fake
endpoint, code units checked in the sandbox and trained, recorded, replayed with the server gone.

One scripted proposal walks through every failure the pipeline must feed back: 429 then 503, a
malformed review, a timed-out planner, then coder attempts with a syntax error, hostile code (lint),
a non-causal unit (the sandboxed checker, blaming the code unit), a runtime error (its line in the
unit's source), a 50 GB allocation (contained by the sandbox), a valid unit the observer rejects,
and the accepted one. Then a crossover and a scratch design, each a new root over a new mixer,
coded top-down from the auto replies and accepted."""

import json
import os
import re

import pytest

from configs import ladder
from evolution.designers.fake_gemini import FakeGemini
from evolution.store import Store
from genesys_jax import branch, loop, resolve
import designer_scripts as s

KEY = "sk-live-NEVER-WRITTEN-8d1e4b"


def llm_config(url, **designer):
  config = ladder.get_config("llm_smoke")
  config.evolution.n_proposals = 1
  config.evolution.mode_probs = dict(scratch=0.0, mutation=1.0, crossover=0.0)
  config.ladder.rungs = ("tiny",)
  config.designer.kind = "llm"
  config.designer.base_url = url
  config.designer.timeout_s = 1.5
  config.designer.retry_initial_s = 0.01
  config.designer.unit_retries = 7
  config.designer.update(designer)
  return config


SCRIPT = {
    "searcher": [{"text": "Token shift mixes neighbours cheaply (RWKV).",
                  "grounding": {"queries": ["token shift mixer"],
                                "urls": [("https://arxiv.org/abs/2305.13048", "RWKV")]}}],
    "proposer": [{"status": 429}, {"status": 503}, {"json": s.PROPOSAL}, {"json": s.PROPOSAL}],
    "reviewer": [{"text": '{"rating": 5, "review": "great"'}, s.rating(4, "sound")],
    "planner": [{"delay": 3.0, "json": s.PLAN}, {"json": s.PLAN}],
    "coder": [s.code(s.SYNTAX_ERROR), s.code(s.HOSTILE), s.code(s.NON_CAUSAL), s.code(s.RUNTIME),
              s.code(s.MEMORY_HOG), s.code(s.VALID_1), s.code(s.VALID_2)],
    "observer": [s.rating(2, "the mix is too large"), s.rating(4, "good")],
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
  """A workdir with the GPT seed checked and trained (GP only, no proposals), copied by each test."""
  workdir = tmp_path_factory.mktemp("seeded")
  config = llm_config("", kind="gp")
  config.evolution.n_proposals = 0
  loop.run(config, str(workdir), log=lambda _: None)
  return workdir


def branched(config, source):
  """`config` as a new run that starts from `source`'s state (`--config.branch_from`): a resume may
  not change who proposes (designer.*, evolution.*), a branch may."""
  config.branch_from = str(source)
  return config


@pytest.fixture(scope="module")
def llm_run(seeded, tmp_path_factory):
  os.environ["GEMINI_API_KEY"] = KEY
  workdir = tmp_path_factory.mktemp("llm") / "run"
  lines = []
  with FakeGemini(SCRIPT, fallback=None) as fake:
    board = loop.run(branched(llm_config(fake.url, search=True), seeded), str(workdir), log=lines.append)
  yield workdir, board, lines, fake
  del os.environ["GEMINI_API_KEY"]


def coder_prompts(fake):
  return [json.dumps(r["body"]) for r in fake.requests if r["role"] == "coder"]


def test_each_failure_is_fed_back_and_the_fixed_unit_is_accepted_checked_and_trained(llm_run):
  workdir, board, lines, fake = llm_run
  assert fake.roles() == (["searcher"] + ["proposer"] * 3 + ["reviewer", "proposer", "reviewer", "planner", "planner"]
                          + ["coder"] * 6 + ["observer", "coder", "observer"])
  prompts = coder_prompts(fake)
  assert "line 17: syntax error" in prompts[1]               # the lint's line went back
  assert "forbidden import os" in prompts[2]                 # hostile code: refused before running
  assert "causality fail" in prompts[3]                      # the sandboxed checker's report went back,
  assert "the leak starts in ShiftGate@" in prompts[3]       # blaming the code unit, not its parent
  assert f"at line {s.RUNTIME_LINE} of ShiftGate@" in prompts[4]   # a runtime error's line in its source
  assert "prev = prev @ jnp.ones((3, 5))" in prompts[4] and "checker bug" not in prompts[4]
  assert "sandbox" in prompts[5] or "init fail" in prompts[5]   # the 50 GB allocation was contained
  assert "observer rated it 2/5" in prompts[6]               # the observer's review went back
  assert "/tmp/" not in "".join(prompts) and os.getcwd() not in "".join(prompts)   # no machine paths
  proposer_2 = [json.dumps(r["body"]) for r in fake.requests if r["role"] == "proposer"][3]
  assert "could not be reviewed" in proposer_2 and "not a valid Rating" in proposer_2
  assert "Literature notes:\\nToken shift mixes neighbours" in proposer_2
  with Store.open(str(workdir)) as store:
    llm = [d for d in store.designs() if d["operator"] == "mutation"]
    assert len(llm) == 1 and llm[0]["status"] == "verified"
    child = llm[0]
    doc = json.loads(child["tree"])
    assert doc["format"] == "genesys_jax.design/2"
    (kind, source), = doc["units"].items()
    assert kind.startswith("ShiftGate@") and source == s.VALID_2
    assert [u["kind"] for u in store.code_units()] == [kind]
    assert store.verifications(child["id"])[0]["metrics"]["val_bpb"] > 0
    kinds = {a["kind"] for a in store.artifacts(design_id=child["id"])}
    assert {"proposal", "reviews", "ratings", "transcript", "designer", "plans"} <= kinds
    summary = json.loads(store.artifacts(design_id=child["id"], kind="designer")[0]["content"])
    assert summary["designer"] == "llm" and summary["title"] == "ShiftGate" and summary["rating"] == 4
    assert summary["attempts"] == 7 and summary["status"] == "accepted"
    assert summary["usd"] == pytest.approx(summary["usd_proposal"] + summary["usd_implementation"])
    assert summary["usd_proposal"] > 0 and summary["usd_implementation"] > 0
    assert summary["tokens_total"] > 0
    calls = store.artifacts(kind="llm_call")
    proposal = json.loads(store.artifacts(design_id=child["id"], kind="proposal")[0]["content"])
    assert proposal["search"]["queries"] == ["token shift mixer"]
    assert proposal["search"]["urls"] == [{"uri": "https://arxiv.org/abs/2305.13048", "title": "RWKV"}]
    assert proposal["selection"] == "0.0.1" and proposal["parents"] == child["parents"]
    assert len(calls) == 15                                 # one per call; the SDK retries inside one
    ratings = json.loads(store.artifacts(design_id=child["id"], kind="ratings")[0]["content"])
    assert [r["rating"] for r in ratings] == [2, 4]
  row = next(r for r in board if r["designer"] == "llm")
  assert row["title"] == "ShiftGate" and row["rating"] == 4 and row["attempts"] == 7
  assert row["usd"] > 0 and row["tokens_total"] > 0
  assert any("ShiftGate (review 4/5, 7 tries" in line for line in lines)


def test_the_key_is_never_written_to_the_workdir(llm_run):
  workdir = llm_run[0]
  for root, _, files in os.walk(workdir):
    for f in files:
      with open(os.path.join(root, f), "rb") as fh:
        assert KEY.encode() not in fh.read(), os.path.join(root, f)


def test_replay_with_the_server_stopped_gives_identical_designs(llm_run, seeded, tmp_path, monkeypatch):
  workdir, board, _, fake = llm_run
  monkeypatch.delenv("GEMINI_API_KEY", raising=False)       # replay needs no key and no network
  config = llm_config(fake.url, search=True)                # the server is shut down
  config.replay_from = str(workdir)
  lines = []
  again = loop.run(branched(config, seeded), str(tmp_path / "replay"), log=lines.append)
  assert any(f"replay: identical to {workdir}" in line for line in lines), lines[-3:]
  assert [r["id"] for r in again] == [r["id"] for r in board]


def test_budget_exhausted_mid_design_stops_cleanly_and_resumes(seeded, tmp_path, monkeypatch):
  monkeypatch.setenv("GEMINI_API_KEY", KEY)
  workdir = tmp_path / "run"
  one_call = 0.0003 + 0.00125            # the fake's usage (1000 in, 400 + 100 out) at flash prices
  lines = []
  with FakeGemini({"proposer": [{"json": s.PROPOSAL}] * 2, "reviewer": [s.rating(4), s.rating(2)]},
                  fallback=None) as fake:
    loop.run(branched(llm_config(fake.url, max_usd=2 * one_call, proposal_attempts=1), seeded),
             str(workdir), log=lines.append)
    assert fake.roles() == ["proposer", "reviewer"]          # the planner's call was never sent
    assert any("designer budget exhausted" in line and "stopped cleanly before proposal 1" in line
               for line in lines)
    with Store.open(str(workdir)) as store:
      assert store.get_meta("proposals_done", 0) == 0
      assert [d["operator"] for d in store.designs()] == ["seed"]
      assert len(store.artifacts(kind="llm_call")) == 2       # what was spent is accounted
    lines.clear()
    loop.run(branched(llm_config(fake.url, max_usd=1.0, proposal_attempts=1), seeded), str(workdir),
             log=lines.append)  # the same run, resumed with a larger budget
  assert fake.roles() == ["proposer", "reviewer"] * 2
  with Store.open(str(workdir)) as store:
    assert store.get_meta("proposals_done", 0) == 1
    (summary,) = [json.loads(a["content"]) for a in store.artifacts(kind="designer")]
    assert summary["status"] == "unreviewed" and summary["rating"] == 2
    assert len(store.artifacts(kind="llm_call")) == 4


# Scratch runs by default (a new root over a new mixer: two units, top-down); crossover is the same
# path with two parents and a kept subtree, so it is left to the slow run.
@pytest.mark.parametrize("mode", [pytest.param("crossover", marks=pytest.mark.slow), "scratch"])
def test_crossover_and_scratch_designs_are_coded_top_down_and_accepted(llm_run, tmp_path, monkeypatch, mode):
  monkeypatch.setenv("GEMINI_API_KEY", KEY)
  workdir = tmp_path / "run"                                # GPT and the verified LLM child: two parents
  config = branched(llm_config(""), llm_run[0])
  config.evolution.mode_probs = dict(scratch=float(mode == "scratch"), mutation=0.0,
                                     crossover=float(mode == "crossover"))
  with FakeGemini() as fake:                                # the auto replies: a root over a new mixer
    config.designer.base_url = fake.url
    workdir.mkdir()                                         # the branch loop.run would make
    branch.make(str(llm_run[0]), str(workdir), loop.config_json(resolve.resolve(config)), lambda _: None)
    controller = loop.Controller(config, str(workdir), log=lambda _: None)
    try:
      controller.step(1, 2)
    finally:
      controller.store.close()
  root, mixer = [re.search(r"Write the unit (\w+) \(role", p)[1] for p in coder_prompts(fake)]
  assert root.endswith("Root") and mixer == root[:-4]        # the new root first, then its new child
  prompts = coder_prompts(fake)
  assert "PendingBlock" in prompts[0]                        # the root stands as a placeholder at first
  assert f"- {root} (block, written)" in prompts[1]
  assert "PendingSequenceMixer@" in prompts[1].split(f"you are writing {mixer}")[0].rsplit("\\n", 1)[-1]
  with Store.open(str(workdir)) as store:
    (child,) = [d for d in store.designs() if d["operator"] == mode]
    assert child["status"] == "valid" and len(child["parents"]) == (2 if mode == "crossover" else 0)
    doc = json.loads(child["tree"])
    assert sorted(k.split("@")[0] for k in doc["units"]) == sorted([root, mixer])   # no placeholder left
    ratings = json.loads(store.artifacts(design_id=child["id"], kind="ratings")[0]["content"])
    assert [r["unit"] for r in ratings] == [root, mixer]
