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
    s = experiment.run_summary(str(workdir), store, 3)
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


@pytest.mark.slow
def test_experiment_runs_two_arms_resumably_and_writes_its_table(tmp_path):
  config = ladder_config("smoke")
  config.evolution.n_proposals = 2
  lines = []
  doc = experiment.experiment(config, ["gp", "random"], [0], str(tmp_path), log=lines.append)
  assert "run 2/2: arm random, seed 0" in lines
  assert any(line.startswith("gp seed 0 | ") for line in lines)  # the runs' progress, prefixed
  assert [r["arm"] for r in doc["table"]] == ["gp", "random"]
  table = experiment.format_table(doc).splitlines()
  assert table[1].split()[:3] == ["arm", "seeds", "best"] and table[3].startswith("gp ")
  assert all(r["gpt_top_bpb"] is not None and r["wall_s"] > 0 for r in doc["table"])
  assert (tmp_path / "gp" / "seed0" / "report" / "index.html").exists()
  lines.clear()
  again = experiment.experiment(config, ["gp", "random"], [0], str(tmp_path), log=lines.append)
  status = [line for line in lines if line.startswith(("gp seed 0:", "random seed 0:"))]
  assert len(status) == 2 and all("finished earlier" in line for line in status), lines
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


# -- the numbers behind each chart, on a store whose history is known --------------------------
def _store_with_history(workdir):
  """A run of 4 proposals on rungs tiny -> small (2 promotion slots) whose promotions are recorded
  after later proposals: d1 is promoted after proposal 3, d3 after proposal 4; d2 is rejected."""
  from gab import seeds as seed_lib  # pylint: disable=g-import-not-at-top
  from gab.tree import design_to_json  # pylint: disable=g-import-not-at-top
  config = ladder_config("smoke")
  config.ladder.n_target = 2  # rungs tiny -> small, ratio 0.5
  (workdir / "config.json").write_text(config.to_json())
  tree = design_to_json(seed_lib.seed("gpt"), "gpt")
  result = lambda bpb, params=1000: {"val_bpb": bpb, "params": params, "tokens": 10}  # noqa: E731
  with Store.open(str(workdir)) as store:
    def add(i, op, status, parents=()):
      store.add_design(i, tree, list(parents), op, i, status)
    add("gpt", "seed", "verified")
    store.add_verification("gpt", "tiny", result(3.0))
    store.add_verification("gpt", "small", result(2.8, 4000))
    add("d1", "mutation", "verified", ["gpt"])
    store.add_verification("d1", "tiny", result(2.9))
    add("d2", "mutation", "rejected", ["gpt"])
    add("d3", "crossover", "verified", ["d1", "gpt"])
    store.add_verification("d3", "tiny", result(2.7))
    store.add_verification("d1", "small", result(2.6, 4000))
    add("d4", "scratch", "verified")
    store.add_verification("d4", "tiny", result(2.95))
    store.add_verification("d3", "small", result(2.5, 4400))
  return workdir


def test_best_so_far_credits_each_result_to_the_proposal_it_was_known_at(tmp_path):
  from genesys_jax.report import figures, gather  # pylint: disable=g-import-not-at-top
  with Store.open(str(_store_with_history(tmp_path))) as store:
    run = gather.load(str(tmp_path), store)
  assert gather.best_so_far(run, "tiny") == ([1, 2, 3, 4], [2.9, 2.9, 2.7, 2.7])
  # Not [2.6, 2.6, 2.5, 2.5]: d1's small result came after proposal 3, d3's after proposal 4.
  assert gather.best_so_far(run, "small") == ([1, 2, 3, 4], [None, None, 2.6, 2.5])
  fig = figures.best_so_far(run)
  small = next(t for t in fig.data if t.name == "rung small")
  assert list(small.y) == [None, None, 2.6, 2.5]
  assert list(next(t for t in fig.data if t.name == "GPT seed @ small").y) == [2.8, 2.8]


def test_ladder_chart_shows_slots_only_where_they_bound(tmp_path):
  from genesys_jax.report import figures, gather, site  # pylint: disable=g-import-not-at-top
  with Store.open(str(_store_with_history(tmp_path))) as store:
    run = gather.load(str(tmp_path), store)
  rows = gather.funnel(run)
  assert rows == [{"rung": "tiny", "budget": None, "discovered": 3, "baselines": 1, "failed": 0},
                  {"rung": "small", "budget": 2, "discovered": 2, "baselines": 1, "failed": 0}]
  slots, found, seeds = figures.funnel(rows).data
  assert list(slots.y) == [None, 2] and list(found.y) == [3, 2] and list(seeds.y) == [1, 1]
  assert all(f <= s for f, s in zip(found.y[1:], slots.y[1:]))  # never over the slots it has
  assert "take no slot" in seeds.name
  index = site.pages(run)["index.html"]
  assert re.search(r"<td>tiny</td><td class=\"num\">all valid</td><td class=\"num\">3</td>", index)


def test_the_overview_leads_with_each_design_against_gpt_at_every_rung_it_reached(tmp_path):
  from genesys_jax.report import gather, site  # pylint: disable=g-import-not-at-top
  with Store.open(str(_store_with_history(tmp_path))) as store:
    run = gather.load(str(tmp_path), store)
    table = leaderboard.overview(store, ["tiny", "small"])
  assert table == run.overview
  cells = {r["id"]: {g: (x["val_bpb"], x["delta_gpt"] and round(x["delta_gpt"], 6), x["beat_gpt"])
                     for g, x in r["rungs"].items()} for r in table}
  assert [r["id"] for r in table] == ["d3", "d1", "gpt", "d4"]  # best at the top rung first
  assert cells == {"d3": {"tiny": (2.7, -0.3, True), "small": (2.5, -0.3, True)},
                   "d1": {"tiny": (2.9, -0.1, True), "small": (2.6, -0.2, True)},
                   "gpt": {"tiny": (3.0, None, None), "small": (2.8, None, None)},
                   "d4": {"tiny": (2.95, -0.05, True)}}
  assert leaderboard.best_lines(table, ["tiny", "small"]) == [
      "best at tiny: d3 val_bpb 2.7000 (-0.3000 vs GPT: beat it)",
      "best at small: d3 val_bpb 2.5000 (-0.3000 vs GPT: beat it)"]
  text = leaderboard.format_overview(table, ["tiny", "small"]).splitlines()
  assert text[3].split()[:6] == ["d3", "2.7000", "-0.3000", "beat", "2.5000", "-0.3000"]
  assert text[5].split()[:3] == ["gpt", "3.0000", "2.8000"] and text[6].split()[4] == "-"
  index = site.pages(run)["index.html"]
  assert index.index("Against the GPT seed") < index.index("<h2>Counts")  # the page leads with it
  row = re.search(r'<a href="design-d1.html">d1</a></td>(.*?)</tr>', index, re.S).group(1)
  assert re.findall(r'<td class="num[^"]*">([^<]*)</td>', row) == ["2.9000", "-0.1000", "2.6000", "-0.2000"]
  assert "best at small: d3 val_bpb 2.5000" in index


def test_tree_legend_star_is_the_seed_and_colours_are_lowest_rung_bpb(tmp_path):
  from genesys_jax.report import figures, gather  # pylint: disable=g-import-not-at-top
  with Store.open(str(_store_with_history(tmp_path))) as store:
    run = gather.load(str(tmp_path), store)
  nodes = {t.name: t for t in figures.evolution_tree(run).data
           if t.mode == "markers" and t.showlegend is not False}
  assert set(nodes) == {"seed", "discovered, trained", "discovered, no result"}
  ids = {name: [c.removeprefix("design-").removesuffix(".html") for c in t.customdata]
         for name, t in nodes.items()}
  assert ids == {"seed": ["gpt"], "discovered, trained": ["d1", "d3", "d4"],
                 "discovered, no result": ["d2"]}
  assert nodes["seed"].marker.symbol == "star" and nodes["discovered, trained"].marker.symbol == "circle"
  assert list(nodes["discovered, trained"].marker.color) == [2.9, 2.7, 2.95]
  assert list(nodes["seed"].marker.color) == [3.0]
  for name in ("seed", "discovered, trained"):  # one colour scale for both
    assert (nodes[name].marker.cmin, nodes[name].marker.cmax) == (2.7, 3.0)
  assert nodes["discovered, no result"].marker.color == "#cccccc"


def test_experiment_page_with_one_seed_has_no_sd_and_working_links(tmp_path):
  from genesys_jax.report import site as report_site  # pylint: disable=g-import-not-at-top
  wd = tmp_path / "gp" / "seed0"
  wd.mkdir(parents=True)
  with Store.open(str(_store_with_history(wd))) as store:
    s = experiment.run_summary(str(wd), store, 4)
  assert s["best_top_bpb"] == 2.5 and s["delta_gpt_top"] == pytest.approx(-0.3)
  assert s["beat_gpt_top"] and s["param_ratio_top"] == 1.1 and s["top_discovered"] == 2
  assert s["best_so_far"] == [2.9, 2.9, 2.7, 2.7] and s["auc_best_so_far"] == pytest.approx(2.8)
  assert s["valid"] == 3 and s["valid_rate"] == 0.75
  report_site.write(str(wd))
  runs = [dict(s, arm="gp", seed=0, complete=True, wall_s=12.0)]
  doc = experiment.write_results(str(tmp_path), ladder_config("smoke"), ["gp"], [0], runs)
  (row,) = doc["table"]
  assert row["best_top_bpb"] == 2.5 and row["best_top_bpb_sd"] is None and row["best_top_bpb_n"] == 1
  html = (tmp_path / "experiment.html").read_text()
  assert "0.0000" not in html
  cells = re.findall(r'<td class="num">([^<]*)</td>', html.split("<tr><td>gp</td>", 1)[1].split("</tr>")[0])
  assert cells[:4] == ["1", "2.5000", "-", "2.8000"]  # seeds done, best, its sd, GPT
  nav = re.search(r"<nav>(.*?)</nav>", html, re.S).group(1)
  hrefs = re.findall(r'href="([^"]+)"', nav) + re.findall(r'<a href="([^"]+)"', html)
  assert len(re.findall(r'href="', nav)) == 3
  for href in hrefs:
    assert (tmp_path / href).is_file(), href


def test_design_page_links_its_json_and_its_export(tmp_path):
  from genesys_jax import export_design  # pylint: disable=g-import-not-at-top
  workdir = _store_with_history(tmp_path)
  report = workdir / "report"
  site.write(str(workdir))
  page = (report / "design-d3.html").read_text()
  assert 'href="design-d3.json"' in page and f"--workdir={workdir} --design=d3" in page
  with Store.open(str(workdir)) as store:
    assert (report / "design-d3.json").read_text() == store.design("d3")["tree"]
  assert "exported" not in re.sub(r"<[^>]+>", "", page).split("standalone")[1].split("python")[0]
  out = export_design.export(str(workdir), "d3")  # no checkpoint here: no parameters
  assert json.loads(open(os.path.join(out, "config.json")).read())["rung"] == "small"
  site.write(str(workdir))
  page = (report / "design-d3.html").read_text()
  href = re.search(r'<a href="([^"]+)">exported</a>', page).group(1)
  assert (report / href).resolve() == (workdir / "export" / "design_d3" / "model.py").resolve()
