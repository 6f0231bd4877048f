"""Resuming with another config (refused when it changes what results mean, applied and named when
not), branching a new run from a recorded one, and everything a run checks before it writes."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ladder_config, set_fields
from evolution.store import Store
from genesys_jax import branch, loop, resolve, resume


def smoke_json(**changes):
  return json.loads(loop.config_json(resolve.resolve(set_fields(ladder_config("smoke"), changes))))


def snapshot(workdir):
  """Every file's sha256 (but SQLite's -wal and -shm, which even a read-only reader may create)."""
  return {os.path.relpath(os.path.join(d, f), workdir):
          hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
          for d, _, files in os.walk(workdir) for f in files if not f.endswith(("-wal", "-shm"))}


def copy_of(smoke_run, tmp_path, name="old"):
  workdir, _, _ = smoke_run
  return shutil.copytree(workdir, tmp_path / name)


def test_each_difference_is_classed_by_its_fields_results_flag():
  old, new = smoke_json(), smoke_json(**{"rungs.tiny.train_tokens": 40000, "jobs.poll_s": 1.0,
                                         "evolution.n_proposals": 5})
  del old["ladder"]["min_seen"]  # a field added since the run was recorded, at its default
  old["ladder"]["top_fraction"] = 0.75  # ... and one recorded with another value
  new["rungs"]["small"]["seq_len"] = 32  # a resolved value no field declares
  found = [(c.path, c.results) for c in resume.changes(old, new)]
  assert found == [("evolution.n_proposals", False), ("jobs.poll_s", False), ("ladder.min_seen", False),
                   ("ladder.top_fraction", True), ("rungs.small.seq_len", True),
                   ("rungs.tiny.train_tokens", True)]
  assert str(resume.changes(old, new)[3]) == "ladder.top_fraction (0.75 -> 0.5)"
  assert str(resume.changes(old, new)[2]) == "ladder.min_seen (<absent> -> 3)"


def test_a_resume_that_changes_a_budget_is_refused_naming_it_and_writes_nothing(smoke_run, tmp_path):
  old = copy_of(smoke_run, tmp_path)
  before = snapshot(old)
  config = ladder_config("smoke")
  config.rungs.small.train_tokens = 40000
  config.report = False  # harmless, and not named in the refusal
  with pytest.raises(resume.ConfigChanged) as e:
    loop.run(config, str(old), log=lambda _: None)
  assert str(e.value) == (
      f"{old} was run with another config, and these fields change what its results mean: "
      f"rungs.small.train_tokens (20000 -> 40000); resume it with the values recorded in "
      f"{old / 'config.json'}, or branch a new run that keeps what stays valid: --workdir=NEW "
      f"--config.branch_from={old}")
  assert snapshot(old) == before


def test_a_harmless_change_is_applied_and_named_in_one_line(smoke_run, tmp_path):
  old = copy_of(smoke_run, tmp_path)
  config = ladder_config("smoke")
  config.jobs.poll_s = 1.0
  config.evolution.n_proposals = 3
  config.report = False
  lines = []
  loop.run(config, str(old), log=lines.append)
  assert [line for line in lines if "changed settings" in line] == [
      "resuming with changed settings that leave results as they are: jobs.poll_s (0.5 -> 1.0), "
      "report (true -> false)"]
  assert json.loads((old / "config.json").read_text())["jobs"]["poll_s"] == 1.0
  assert not any("training" in line for line in lines)


def test_the_launch_command_refuses_a_changed_budget_and_a_missing_parent_in_one_line(smoke_run, tmp_path):
  old = copy_of(smoke_run, tmp_path)
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  for workdir, override, expected in [
      (old, "--config.rungs.tiny.train_tokens=1000", "rungs.tiny.train_tokens (20000 -> 1000)"),
      (tmp_path / "no" / "such" / "run", "--config.seed=0",
       f"its parent folder {tmp_path / 'no' / 'such'} does not exist")]:
    out = subprocess.run([sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke",
                          override, f"--workdir={workdir}"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: ") and expected in line
  assert not (tmp_path / "no").exists()


def test_a_branch_keeps_the_results_a_change_leaves_valid_and_retrains_the_rest(smoke_run, tmp_path):
  old = copy_of(smoke_run, tmp_path)
  before = snapshot(old)
  config = ladder_config("smoke")
  config.rungs.small.train_tokens = 40000
  config.branch_from = str(old)
  new = tmp_path / "new"
  lines = []
  loop.run(config, str(new), log=lines.append)
  assert f"branching from {old}: rungs.small.train_tokens (20000 -> 40000); results at small dropped" in lines
  assert snapshot(old) == before
  with Store.open(str(old)) as a, Store.open(str(new)) as b:
    assert [(d["id"], d["status"]) for d in a.designs()] == [(d["id"], d["status"]) for d in b.designs()]
    assert b.get_meta("proposals_done") == 3 and b.get_meta("branched_from") == str(old)
    old_v = {(v["design_id"], v["rung"]): v["metrics"] for v in a.verifications()}
    new_v = {(v["design_id"], v["rung"]): v["metrics"] for v in b.verifications()}
    gpt = next(d["id"] for d in b.designs() if d["operator"] == "seed")
  assert {k: v for k, v in new_v.items() if k[1] == "tiny"} == {k: v for k, v in old_v.items() if k[1] == "tiny"}
  small = {k: v for k, v in new_v.items() if k[1] == "small"}
  assert (gpt, "small") in small and len(small) >= 2  # the baseline retrained, and a promotion
  assert {m["tokens"] for m in small.values()} == {40448}  # 79 steps of 8 x 64: the new budget
  trained = [line for line in lines if line.startswith("  training ")]
  assert len(trained) == len(small) and all("at rung small" in line for line in trained)
  assert {p.parent.name for p in (new / "checkpoints").glob("*/*/*")} == {"tiny", "small"}
  lines.clear()
  loop.run(config, str(new), log=lines.append)  # the branch resumes like any run
  assert not any(line.startswith(("  training", "branching")) for line in lines)


def test_what_a_branch_drops_and_what_it_refuses():
  old = smoke_json()
  plan = lambda **c: branch.plan(old, smoke_json(**c)).dropped  # noqa: E731
  assert plan(**{"rungs.small.lr": 1e-3}) == ("small",)
  assert plan(**{"rungs.tiny.train_tokens": 30000, "rungs.tiny.eval_batches": 2}) == ("tiny",)
  assert plan(**{"data.val_fraction": 0.1}) == ("tiny", "small")
  assert plan(seed=3) == ("tiny", "small")
  assert plan(**{"ladder.top_fraction": 0.25, "evolution.exploit_prob": 0.5}) == ()
  for change, named in [({"rungs.tiny.d_model": 48}, "rungs.tiny.d_model (32 -> 48)"),
                        ({"checker.size_tolerance": 0.3}, "checker.size_tolerance (0.2 -> 0.3)"),
                        ({"data.seq_len": 32}, "data.seq_len (64 -> 32)")]:
    with pytest.raises(branch.BranchError, match="a branch keeps the checker's verdicts") as e:
      branch.plan(old, smoke_json(**change))
    assert named in str(e.value)


# -- checked before the first write ---------------------------------------------------------------
BAD = [
    ("data.corpus", "wikipedia", "config.data.corpus = 'wikipedia': unknown corpus 'wikipedia': expected one of"),
    ("seeds", ("gpt", "nosuch"), "config.seeds: 'nosuch': unknown seed 'nosuch': expected one of"),
    ("seeds", ("missing/gpt.json",), "config.seeds: 'missing/gpt.json': cannot read design file "
     "missing/gpt.json: No such file or directory"),
    ("units.files", ("missing/*.py",), "config.units.files: 'missing/*.py' matches no file"),
    ("units.files", ("{bad}",), "config.units.files: {bad}: line 6: forbidden import os"),
    ("branch_from", "{tmp}", "config.branch_from = '{tmp}': no evolution.db there"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{p}={v}" for p, v, _ in BAD])
def test_bad_input_is_one_error_before_anything_is_written(tmp_path, path, value, message):
  bad = tmp_path / "bad.py"
  bad.write_text(open("tests/code_units/token_shift.py").read().replace("import flax", "import os\nimport flax"))
  fill = lambda v: v.format(bad=bad, tmp=tmp_path) if isinstance(v, str) else tuple(fill(x) for x in v)  # noqa: E731
  config = set_fields(ladder_config("smoke"), {path: fill(value)})
  workdir = tmp_path / "run"
  with pytest.raises(ValueError) as e:
    loop.run(config, str(workdir), log=lambda _: None)
  assert str(e.value).startswith(fill(message)) and "\n" not in str(e.value)
  assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  (tmp_path / "run").write_text("")
  with pytest.raises(ValueError, match="is a file, not a folder"):
    loop.run(ladder_config("smoke"), str(tmp_path / "run"), log=lambda _: None)
