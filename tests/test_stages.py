"""The loop's stages one at a time: propose, check and verify return records and write nothing;
record.py writes them to the store and the run state together; proposing reads a bounded amount
of the store however many designs it holds."""

import json

import jax
import pytest

from conftest import ladder_config
from evolution import canonical
from evolution.store import Store
from gab import checker, seeds
from gab.tree import Unit, design_to_json
from genesys_jax import check, propose, record, resolve, verify
from genesys_jax import state as state_lib

U = Unit.make
MIXERS = [U("Attention", n_heads=h) for h in (1, 2, 4, 8)] + [U("CausalConv", kernel_size=k) for k in (2, 3, 4, 5)]
CHANNELS = ([U("GatedMLP", expansion=e, activation=a) for e in (2.0, 2.667, 4.0) for a in ("silu", "gelu")]
            + [U("MLP", expansion=e, activation=a) for e in (2.0, 4.0) for a in ("gelu", "relu2", "silu")])
LAYERS = [U("Residual", [U("Sequence", [U("RMSNorm"), x])]) for x in MIXERS + CHANNELS]  # 20


def design(i: int) -> Unit:
  """Design `i` of a family of 8,000 distinct ones: three layers, digits of i in base 20."""
  return U("Sequence", [LAYERS[i // 400 % 20], LAYERS[i // 20 % 20], LAYERS[i % 20]])


def config(**evolution):
  c = ladder_config("smoke")
  c.evolution.update(evolution)
  return resolve.resolve(c)


def stored_run(tmp_path, n: int, cfg=None, verified_every: int = 2):
  """A store with the GPT seed and `n` designs of the family, every `verified_every`-th verified
  at the lowest rung (val_bpb falling with the index), each with its canonical id; and its state."""
  cfg = cfg or config()
  store = Store.open(str(tmp_path))
  gpt = seeds.seed("gpt")
  trees = [gpt] + [design(i) for i in range(n)]
  with store.transaction():
    for i, tree in enumerate(trees):
      store.add_design(tree.content_hash(), design_to_json(tree), [], "seed" if i == 0 else "scratch",
                       "gpt" if i == 0 else f"d{i}", "verified" if i % verified_every == 0 else "valid",
                       {"passed": True, "checks": [], "sizing": {}}, canonical.canonical_id(tree))
      store.add_artifact(tree.content_hash(), "fingerprint", f"fp{i}")
      if i % verified_every == 0:
        store.add_verification(tree.content_hash(), "tiny", {"val_bpb": 3.0 - i / (n + 1), "params": 1,
                                                             "tokens": 1})
  state, missing = state_lib.load(cfg, store)
  assert missing == {}
  return store, state


def frozen(state):
  return (json.dumps(state.designs, sort_keys=True), sorted(state.known),
          json.dumps(state.fingerprints, sort_keys=True), state.islands, state.proposals_done)


# -- propose ---------------------------------------------------------------------------------------
def test_propose_is_a_function_of_the_state_and_the_index_and_records_nothing(tmp_path):
  store, state = stored_run(tmp_path, 12)
  events, before = len(store.events()), frozen(state)
  first = [propose.propose(state, i) for i in range(6)]
  assert first == [propose.propose(state, i) for i in range(6)]
  assert len({p.tree.content_hash() for p in first}) == 6
  pool = {d["id"] for d in state.pool()}
  for i, p in enumerate(first):
    assert p.index == i and p.designer == "gp" and p.island is None and p.verdict is None
    assert canonical.canonical_id(p.tree) not in state.known
    assert len(p.parents) == propose.PARENTS_PER_MODE[p.mode] and set(p.parents) <= pool
  assert len(store.events()) == events and frozen(state) == before


def test_the_designer_and_island_draws_come_from_their_own_streams(tmp_path):
  store, state = stored_run(tmp_path, 4, config(islands=2))
  state.config.designer.kind = "mixed"
  designers = [propose.designer(state, i) for i in range(60)]
  assert set(designers) == {"gp", "llm"} and designers == [propose.designer(state, i) for i in range(60)]
  state.config.designer.llm_prob = 0.0
  assert {propose.designer(state, i) for i in range(20)} == {"gp"}
  islands = [propose.island(state, i) for i in range(60)]
  assert set(islands) <= {0, 1}
  state.config.designer.kind = "gp"  # no designer draw: the island stream recorded runs used
  assert [propose.island(state, i) for i in range(60)] == [
      int(jax.random.randint(jax.random.fold_in(jax.random.fold_in(state.key, i), 1 << 29), (), 0, 2))
      for i in range(60)]
  store.close()


def test_proposing_reads_the_same_from_the_store_with_1000_designs_as_with_10(tmp_path):
  """The work of a proposal (trees parsed, rows read, SQL statements) does not grow with the store:
  the known canonical ids, fingerprints and the pool's rows are in the run state. Only the parents
  of each try are read (a child already stored is drawn again: more often in a denser store)."""
  for n in (10, 1000):
    store, state = stored_run(tmp_path / str(n), n)
    assert len(state.known) == n + 1 and state.trees.parsed == 0  # loading parsed no tree either
    statements = []
    store._db.set_trace_callback(statements.append)  # pylint: disable=protected-access
    per = []
    for index in range(8):
      parsed, read, executed = state.trees.parsed, state.trees.read, len(statements)
      p = propose.propose(state, index)
      per.append((state.trees.parsed - parsed, state.trees.read - read, len(statements) - executed))
      assert canonical.canonical_id(p.tree) not in state.known
      assert per[-1][0] <= 2 * p.tries  # at most two parents a try, each read and parsed once
    store._db.set_trace_callback(None)  # pylint: disable=protected-access
    assert all(parsed == read == executed for parsed, read, executed in per), per  # parents' rows only
    assert sum(parsed for parsed, _, _ in per) <= 40  # (before: every stored tree, n + 1, each time)
    store.close()


def test_an_old_store_is_indexed_once(tmp_path):
  store, _ = stored_run(tmp_path, 5)
  expected = {d["id"]: d["canonical"] for d in store.designs()}
  store._db.execute("UPDATE designs SET canonical = NULL")  # pylint: disable=protected-access
  state, missing = state_lib.load(config(), store)
  assert missing == expected and state.known == set(expected.values())
  record.index(store, missing)
  assert state_lib.load(config(), store)[1] == {}
  store.close()


# -- check -----------------------------------------------------------------------------------------
def passed_report():
  return checker.Report([checker.Check("format", checker.PASS, "ok")], {"d_model": 32})


def test_judge_tests_novelty_against_the_known_fingerprints_only():
  known = {"fp-a": ["a"], "fp-b": ["b", "b2"]}
  assert check.judge("new", passed_report(), "fp-c", known) == check.Verdict(
      "valid", passed_report().to_dict(), "fp-c")
  assert check.judge("a", passed_report(), "fp-a", known).status == "valid"  # not a twin of itself
  twin = check.judge("new", passed_report(), "fp-b", known)
  assert twin.status == "rejected" and twin.fingerprint is None
  assert twin.summary() == "novelty: computes the same function as stored design b"
  failed = checker.Report([checker.Check("causality", checker.FAIL, "leaks")], {})
  assert check.judge("new", failed, None, known) == check.Verdict("rejected", failed.to_dict(), None)
  assert known == {"fp-a": ["a"], "fp-b": ["b", "b2"]}


def test_check_gives_a_verdict_and_records_nothing(tmp_path):
  cfg = config()
  bad = U("Residual", [U("MLP", expansion=3.0)])  # outside its domain: the format check fails
  verdict = check.check(bad, cfg.checker, cfg.rungs.tiny, {})
  assert verdict.status == "rejected" and verdict.fingerprint is None
  assert verdict.summary().startswith("format: ") and "outside its domain" in verdict.summary()
  assert list(tmp_path.iterdir()) == []


# -- verify ----------------------------------------------------------------------------------------
def test_verify_returns_a_verification_or_a_failure_and_records_nothing(tmp_path):
  from train import data as data_lib  # pylint: disable=g-import-not-at-top
  cfg = config()
  cfg.rungs.tiny.train_tokens = 2 * 8 * 64
  cfg.rungs.tiny.eval_batches = 1
  gpt = seeds.seed("gpt")
  row = {"id": gpt.content_hash(), "tree": design_to_json(gpt, "gpt")}
  lines = []
  got = verify.verify(cfg, lambda: data_lib.load_corpus(cfg.data), row, "tiny", str(tmp_path), lines.append)
  assert isinstance(got, verify.Verification) and (got.design_id, got.rung) == (row["id"], "tiny")
  assert got.metrics["steps"] == 2 and got.metrics["val_bpb"] > 0 and got.metrics["params"] > 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "tensorboard"]
  assert verify.line(got).startswith(f"  {row['id']} @ tiny: val_bpb ")
  wide = U("Sequence", [U("Residual", [U("Attention")]) for _ in range(12)])  # no sizing fits tiny
  row = {"id": wide.content_hash(), "tree": design_to_json(wide)}
  failed = verify.verify(cfg, lambda: pytest.fail("no data is read"), row, "tiny", str(tmp_path), lines.append)
  assert isinstance(failed, verify.Failure) and failed.error.startswith("SizeError: no sizing within +-20%")
  assert failed.metrics == {"val_bpb": None, "params": None, "tokens": None, "error": failed.error}


# -- record ----------------------------------------------------------------------------------------
def test_recording_changes_the_store_and_the_state_alike(tmp_path):
  cfg = config(islands=2, migrate_every=1)
  store, state = stored_run(tmp_path, 6, cfg)
  p = propose.propose(state, 0)
  verdict = check.judge(p.tree.content_hash(), passed_report(), "fp-new", state.fingerprints)
  cid = record.proposal(store, state, p, verdict)
  assert cid == p.tree.content_hash() and state.proposals_done == 1
  q = propose.propose(state, 1)
  record.proposal(store, state, q, None)  # checked by a worker later: `checking`, with a checker job
  assert store.design(q.tree.content_hash())["status"] == "checking"
  assert [(j["design_id"], j["rung"]) for j in store.jobs()] == [(q.tree.content_hash(), "check")]
  record.verdict(store, state, q.tree.content_hash(), check.Verdict("valid", passed_report().to_dict(), "fp-q"))
  assert frozen(state_lib.load(cfg, store)[0]) == frozen(state)
  assert state.islands.home(cid) == p.island and state.fingerprints["fp-new"] == [cid]
  store.close()


def test_a_result_whose_lease_was_taken_over_is_not_recorded(tmp_path):
  store, state = stored_run(tmp_path, 2)
  job = (design(0).content_hash(), "tiny")  # stored valid, not verified
  store.enqueue(*job)
  assert store.claim("slow", 10) == job
  store._db.execute("UPDATE jobs SET worker_id = 'fast' WHERE rung = 'tiny'")  # pylint: disable=protected-access
  result = verify.Verification(*job, {"val_bpb": 1.0, "params": 1, "tokens": 1})
  assert not record.result(store, "slow", result, "tiny")
  assert store.verification(*job) is None and store.design(job[0])["status"] == "valid"
  assert record.result(store, "fast", result, "tiny")
  record.learn(state, store, [job])
  assert state.designs[job[0]]["metrics"]["tiny"]["val_bpb"] == 1.0
  assert state.designs[job[0]]["status"] == "verified"
  assert frozen(state_lib.load(config(), store)[0]) == frozen(state)
  store.close()
