"""The walking skeleton end to end: a smoke run of the real loop on the embedded corpus."""

import importlib.util
import json
import sqlite3

import pytest

from genesys_jax import loop


def smoke_config(**evolution):
  spec = importlib.util.spec_from_file_location("ladder", "configs/ladder.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.evolution.update(evolution)
  return config


def rows(workdir, sql):
  with sqlite3.connect(workdir / "evolution.db") as db:
    return db.execute(sql).fetchall()


# smoke_run: the session fixture in conftest.py (one smoke run shared with tests/test_report.py).


def test_smoke_run_fills_designs_and_verifications(smoke_run):
  workdir, board, lines = smoke_run
  designs = rows(workdir, "SELECT id, tree, parents, operator, seq, status FROM designs ORDER BY seq")
  assert len(designs) == 4  # the GPT seed and 3 proposals
  assert designs[0][3] == "seed" and json.loads(designs[0][2]) == []
  assert [d[4] for d in designs] == [0, 1, 2, 3]
  for design_id, tree, parents, operator, _, status in designs[1:]:
    assert len(json.loads(parents)) == {"scratch": 0, "mutation": 1, "crossover": 2}[operator]
    assert json.loads(tree)["tree"]["kind"]
    assert status in ("verified", "rejected")
  verified = {d[0] for d in designs if d[5] == "verified"}
  verifications = rows(workdir, "SELECT design_id, rung, metrics FROM verifications")
  assert {v[0] for v in verifications} == verified and len(verified) >= 2
  for _, rung, metrics in verifications:
    m = json.loads(metrics)
    assert rung in ("tiny", "small") and 0 < m["val_bpb"] < 9 and m["params"] > 0 and m["tokens"] > 0
  assert [r["id"] for r in board] and board == sorted(board, key=lambda r: r["val_bpb"])
  # The summary leads with the overview table, then each rung's board; last, the best discovered
  # design per rung and the report's path.
  assert lines[-1] == f"report: {workdir / 'report' / 'index.html'}" and (workdir / "report" / "index.html").exists()
  assert [line.split(":")[0] for line in lines[-3:-1]] == ["best at tiny", "best at small"]
  assert lines[-5].startswith("designs at every rung they reached") and "[seed] gpt" in lines[-5]
  assert lines[-4].startswith("rung tiny: validation bpb")
  assert (workdir / "config.json").exists()
  assert list((workdir / "checkpoints").glob("*/tiny/*"))


def test_second_run_resumes_without_duplicates(smoke_run):
  workdir, board, _ = smoke_run
  before = rows(workdir, "SELECT id, seq FROM designs ORDER BY seq")
  lines = []
  again = loop.run(smoke_config(), str(workdir), log=lines.append)
  assert rows(workdir, "SELECT id, seq FROM designs ORDER BY seq") == before
  assert again == board
  assert not any("training" in line for line in lines)


def test_same_seed_same_designs_across_interrupted_runs_and_replay_agrees(smoke_run, tmp_path):
  workdir, _, _ = smoke_run
  loop.run(smoke_config(n_proposals=1), str(tmp_path), log=lambda _: None)
  lines = []
  replayed = smoke_config()
  replayed.replay_from = str(workdir)
  loop.run(replayed, str(tmp_path), log=lines.append)  # continues to 3 proposals
  assert any(line.startswith("replay: identical to") for line in lines), [
      line for line in lines if line.startswith("replay")] or lines[-3:]
  sql = "SELECT id, parents, operator, description, status FROM designs ORDER BY seq"
  assert rows(tmp_path, sql) == rows(workdir, sql)
  sql = "SELECT design_id, metrics FROM verifications ORDER BY design_id"
  timing = ("tokens_per_s", "train_wall_s")
  results = [[(d, {k: v for k, v in json.loads(m).items() if k not in timing}) for d, m in rows(w, sql)]
             for w in (tmp_path, workdir)]
  assert results[0] == results[1]


def test_missing_corpus_is_one_clear_error(tmp_path):
  config = smoke_config()
  config.data.corpus = "wikipedia"
  with pytest.raises(ValueError, match="unknown corpus 'wikipedia': expected one of"):
    loop.run(config, str(tmp_path), log=lambda _: None)


def test_smoke_run_promotes_a_design_to_the_second_rung(smoke_run):
  workdir, board, _ = smoke_run
  promoted = rows(workdir, "SELECT v.design_id FROM verifications v JOIN designs d ON d.id = v.design_id "
                           "WHERE v.rung = 'small' AND d.operator != 'seed'")  # seeds: baselines
  assert len(promoted) == 1
  tiny = dict(rows(workdir, "SELECT design_id, json_extract(metrics, '$.val_bpb') FROM verifications "
                            "WHERE rung = 'tiny'"))
  # In the better half at tiny (ladder.top_fraction 0.5 in :smoke), the GPT seed included.
  better = sum(bpb < tiny[promoted[0][0]] for bpb in tiny.values())
  assert better < 0.5 * len(tiny)
  assert any("small" in r["rungs"] for r in board)


@pytest.mark.slow  # two more smoke runs (~2 min on 2 cores); replay agreement is in the default run
def test_replay_with_one_changed_value_reports_the_first_affected_design(smoke_run, tmp_path):
  workdir, _, _ = smoke_run
  changed = smoke_config()
  changed.replay_from = str(workdir)
  changed.rungs.tiny.lr = 1e-3  # every verification at tiny changes, starting with the seed's
  lines = []
  loop.run(changed, str(tmp_path), log=lines.append)
  assert any("rungs.tiny.lr: 0.003 -> 0.001" in line for line in lines)
  (diverged,) = [line for line in lines if "DIVERGED" in line]
  assert "at design #0" in diverged and "rung tiny: metrics differ" in diverged


def test_a_design_that_diverges_is_recorded_as_failed_and_the_run_goes_on(tmp_path):
  config = smoke_config(n_proposals=0)
  config.rungs.tiny.lr = 1e4
  lines = []
  loop.run(config, str(tmp_path), log=lines.append)
  (status,) = rows(tmp_path, "SELECT status FROM designs")
  assert status == ("failed",)
  ((metrics,),) = rows(tmp_path, "SELECT metrics FROM verifications")
  m = json.loads(metrics)
  assert m["val_bpb"] is None and m["error"].startswith("FloatingPointError: training diverged")
  assert any("failed at tiny" in line for line in lines)
  lines.clear()
  loop.run(config, str(tmp_path), log=lines.append)  # a restart does not retrain it
  assert not any("training" in line for line in lines)
