"""The run's HTML report in headless Chromium, the per-rung baselines, scoring after the fact, the
experiment table, islands, training progress and a quiet start — on the shared smoke run."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import cdp
from conftest import ladder_config
from evolution.store import Store
from genesys_jax import experiment, leaderboard
from genesys_jax import islands as loop_islands
from genesys_jax.report import site

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_DIR = os.environ.get("GENESYS_EVAL_DIR") or os.path.join(os.path.dirname(REPO), "shared", "eval")


@pytest.fixture(scope="module")
def boards(smoke_run):
  workdir, _, _ = smoke_run
  with Store.open(str(workdir)) as store:
    return leaderboard.by_rung(store, ["tiny", "small"])


def test_every_rung_holds_the_gpt_seed_and_the_top_rung_a_discovered_design(boards):
  for rung, rows in boards.items():
    (gpt,) = [r for r in rows if r["is_seed"] and r["description"] == "gpt"]
    assert gpt["delta_gpt"] == 0.0 and gpt["param_ratio"] == 1.0, rung
  found = [r for r in boards["small"] if not r["is_seed"]]
  assert found and all(r["val_bpb"] is not None for r in found)
  for rows in boards.values():
    gpt = next(r for r in rows if r["is_seed"])
    for r in rows:
      assert r["delta_gpt"] == pytest.approx(r["val_bpb"] - gpt["val_bpb"])
      assert r["param_ratio"] == r["params"] / gpt["params"]
      assert r["size_mismatch"] == (abs(r["param_ratio"] - 1) > 0.05)


def test_the_loop_refreshed_the_report_file_by_file(smoke_run):
  workdir, _, _ = smoke_run
  report = workdir / "report"
  with Store.open(str(workdir)) as store:
    ids = [d["id"] for d in store.designs()]
  assert sorted(p.name for p in report.glob("design-*.html")) == sorted(f"design-{i}.html" for i in ids)
  assert not list(report.glob("*.tmp*")), "a temporary file was left behind"
  assert (report / "plotly.min.js").stat().st_size > 1_000_000  # the package's own copy, no CDN
  for page in report.glob("*.html"):
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), page.name


def _links(html: str) -> list[str]:
  return re.findall(r'<a href="([^"]+)"', html)


@pytest.mark.skipif(not cdp.available(), reason="Debian's chromium is not installed")
def test_report_in_headless_chromium(smoke_run, tmp_path, boards):
  workdir, _, _ = smoke_run
  report = workdir / "report"
  top = next(r for r in boards["small"] if not r["is_seed"])  # a discovered design at the top rung
  for page in ["index.html", "rung-tiny.html", "rung-small.html"]:  # every leaderboard row links
    html = (report / page).read_text()
    rows = re.findall(r"<tr[^>]*>\s*<td>\d+</td><td><a href=\"([^\"]+)\"", html)
    assert rows, page
    for href in rows:
      assert (report / href).is_file(), f"{page} links to missing {href}"
  browser = cdp.Browser()
  try:
    for page in ["index.html", f"design-{top['id']}.html", "tree.html"]:
      png = tmp_path / (page + ".png")
      seen = browser.visit((report / page).as_uri(), str(png))
      assert seen["loaded"], page
      assert all(u.startswith("file://") for u in seen["requests"]), seen["requests"]
      assert not seen["failed"], seen["failed"]
      assert not seen["console_errors"] and not seen["exceptions"] and not seen["log_errors"], seen
      assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, page
      if page != f"design-{top['id']}.html":
        assert seen["eval"]("document.querySelectorAll('.plotly-graph-div .main-svg').length") > 0
      hrefs = seen["eval"]("Array.from(document.querySelectorAll('a[href]'), a => a.getAttribute('href'))")
      for href in hrefs:
        assert (report / href).is_file(), f"{page} links to missing {href}"
    assert top["id"] in (report / f"design-{top['id']}.html").read_text()
  finally:
    browser.close()


def test_report_command_and_bad_workdir(smoke_run, tmp_path):
  workdir, _, _ = smoke_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "report"))
  assert site.write(str(copy)) == str(copy / "report" / "index.html")
  assert "rung small" in (copy / "report" / "rung-small.html").read_text()
  proc = subprocess.run([sys.executable, "-m", "genesys_jax.report", f"--workdir={tmp_path / 'none'}"],
                        capture_output=True, text=True, cwd=REPO, check=False)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
  assert not (tmp_path / "none").exists()


@pytest.mark.skipif(not os.path.isdir(EVAL_DIR), reason=f"no evaluation files at {EVAL_DIR}")
def test_scoring_after_the_fact_stores_zero_shot_accuracies_with_the_verification(smoke_run, tmp_path):
  from genesys_jax import score  # pylint: disable=g-import-not-at-top
  workdir, _, _ = smoke_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  with Store.open(str(copy)) as store:
    design = next(d for d in store.designs() if d["operator"] != "seed" and d["status"] == "verified")
    before = next(v for v in store.verifications(design["id"]) if v["rung"] == "tiny")["metrics"]
  tasks = [os.path.join(EVAL_DIR, "mc", "copa.jsonl"), os.path.join(EVAL_DIR, "blimp", "passive_1.jsonl")]
  scores = score.score(str(copy), design["id"], "tiny", tasks, limit=8)
  assert sorted(scores) == ["copa", "passive_1"] and all(0.0 <= a <= 1.0 for a in scores.values())
  with Store.open(str(copy)) as store:
    after = next(v for v in store.verifications(design["id"]) if v["rung"] == "tiny")["metrics"]
  assert after["zeroshot"] == scores and after["zeroshot_detail"]["copa"]["n"] == 8
  assert {k: v for k, v in after.items() if not k.startswith("zeroshot")} == before
  with pytest.raises(KeyError, match="no successful verification at rung 'nope'|rung 'nope' is not"):
    score.score(str(copy), design["id"], "nope", tasks)


def test_an_experiment_runs_wall_time_sums_every_process_that_worked_on_it(tmp_path):
  """A run resumed after a crash counts the crashed process's time too (it saves as it goes)."""
  path = str(tmp_path / "experiment_wall.json")
  first = experiment._WallClock(path, every_s=0.0)
  time.sleep(0.2)
  first.save()  # on a log line; the process then dies without its final save
  second = experiment._WallClock(path)
  assert second.before >= 0.2
  time.sleep(0.1)
  second.save(force=True)
  assert experiment._WallClock(path).before >= 0.3
  assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_experiment_summary_and_table(smoke_run, tmp_path):
  workdir, _, _ = smoke_run
  with Store.open(str(workdir)) as store:
    s = experiment.run_summary(store, ["tiny", "small"], 3)
  assert s["proposals"] == 3 and s["top_discovered"] >= 1 and s["gpt_top_bpb"] is not None
  assert s["delta_gpt_top"] == pytest.approx(s["best_top_bpb"] - s["gpt_top_bpb"])
  assert s["beat_gpt_top"] == (s["delta_gpt_top"] < 0)
  assert len(s["best_so_far"]) == 3 and s["best_so_far"] == sorted(s["best_so_far"], reverse=True)
  assert s["valid_rate"] == s["valid"] / 3
  runs = [dict(s, arm="gp", seed=k, complete=True, wall_s=10.0 * (k + 1)) for k in range(3)]
  runs[1]["best_top_bpb"] = s["best_top_bpb"] + 0.3
  (row,) = experiment.table(runs, ["gp"])
  assert row["wall_s"] == 20.0 and row["wall_s_sd"] == pytest.approx(10.0) and row["wall_s_n"] == 3
  assert row["best_top_bpb"] == pytest.approx(s["best_top_bpb"] + 0.1)
  doc = experiment.write_results(str(tmp_path), ladder_config("smoke"), ["gp"], [0, 1, 2], runs)
  assert json.loads((tmp_path / "experiment.json").read_text())["table"] == json.loads(json.dumps(doc["table"]))
  assert "Discovery experiment" in (tmp_path / "experiment.html").read_text()
  with pytest.raises(ValueError, match="unknown arm 'nope'"):
    experiment.experiment(ladder_config("smoke"), ["gp", "nope"], [0], str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()
  c = experiment.arm_config(ladder_config("smoke"), "random", 5)
  assert c.seed == 5 and c.evolution.mode_probs.to_dict() == {"scratch": 1.0, "mutation": 0.0, "crossover": 0.0}
  assert experiment.arm_config(ladder_config("smoke"), "islands", 0).evolution.islands == 4


def test_islands_start_from_the_seeds_and_children_live_on_the_island_that_bred_them():
  isles = loop_islands.load(type("S", (), {"get_meta": lambda self, k: None})(), 3)
  isles = loop_islands.add_seed(isles, "gpt")
  assert isles.residents == (("gpt",), (), ()) and isles.guests == ((), ("gpt",), ("gpt",))
  isles = loop_islands.add_child(isles, "a", ["gpt"], island=2)
  isles = loop_islands.add_child(isles, "b", [], island=2)
  assert isles.home("a") == 2 and isles.home("b") == 2 and isles.pool(2) == ["a", "b", "gpt"]
  assert isles.pool(1) == ["gpt"]
  pool = [{"id": i} for i in ("gpt", "a", "b")]
  assert [d["id"] for d in loop_islands.restrict(pool, isles, 1)] == ["gpt"]


def test_training_prints_progress_lines_when_output_is_not_a_terminal(capsys):
  from gab import seeds  # pylint: disable=g-import-not-at-top
  from train import data as data_lib  # pylint: disable=g-import-not-at-top
  from train import trainer  # pylint: disable=g-import-not-at-top
  config = ladder_config("smoke")
  corpus = data_lib.load_corpus(config.data)
  rung = config.rungs.tiny
  rung.train_tokens = 8 * 64 * 12
  cfg = trainer.default_train_config()
  cfg.log_every, cfg.progress_every_s = 4, 0.0
  metrics, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus,
                                          trainer.Run(train=cfg, desc="gpt@tiny"))
  lines = [line for line in capsys.readouterr().out.splitlines() if "gpt@tiny: step" in line]
  assert len(lines) == 3 and lines[-1].strip().startswith("gpt@tiny: step 12/12"), lines
  assert all(re.search(r"step \d+/\d+, loss \d+\.\d+, [\d,]+ tokens/s", line) for line in lines)
  assert [c[0] for c in metrics["loss_curve"]] == list(range(1, metrics["steps"] + 1))


def test_start_up_prints_no_error_looking_tensorflow_or_cuda_lines():
  code = ("import genesys_jax.launch, tensorflow as tf, tensorflow_datasets; "
          "tf.config.list_physical_devices()")
  env = dict(os.environ)  # a fresh shell's: importing jax here set TF_CPP_MIN_LOG_LEVEL=1 for us
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                        check=True, env=env)
  bad = [line for line in proc.stderr.splitlines() if re.match(r"[EF]\d{4}", line) or "cuInit" in line]
  assert not bad, bad


@pytest.mark.slow
def test_experiment_runs_two_arms_resumably_and_writes_its_table(tmp_path):
  config = ladder_config("smoke")
  config.evolution.n_proposals = 2
  lines = []
  doc = experiment.experiment(config, ["gp", "random"], [0], str(tmp_path), log=lines.append)
  assert [r["arm"] for r in doc["table"]] == ["gp", "random"]
  assert all(r["gpt_top_bpb"] is not None and r["wall_s"] > 0 for r in doc["table"])
  assert (tmp_path / "gp" / "seed0" / "report" / "index.html").exists()
  lines.clear()
  again = experiment.experiment(config, ["gp", "random"], [0], str(tmp_path), log=lines.append)
  assert all("finished earlier" in line for line in lines if "seed 0" in line)
  assert again["table"] == doc["table"]
  assert glob.glob(str(tmp_path / "experiment.html"))


@pytest.mark.slow
def test_loop_with_islands_selects_parents_from_the_drawn_island(tmp_path):
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  config = ladder_config("smoke")
  config.evolution.update(dict(islands=2, migrate_every=2, n_proposals=4))
  loop.run(config, str(tmp_path), log=lambda _: None)
  with Store.open(str(tmp_path)) as store:
    isles = loop_islands.load(store, 2)
    ids = [d["id"] for d in store.designs()]
    assert sorted(i for r in isles.residents for i in r) == sorted(ids)
    for d in store.designs():
      for p in d["parents"]:  # bred on its island: every parent was in that island's pool
        assert p in isles.pool(isles.home(d["id"]))
