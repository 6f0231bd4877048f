"""Discovery experiments: the same budget for several arms and seeds, and a table of what each found.

`python -m genesys_jax.experiment --config=configs/ladder.py:discovery --arms=gp,random
--seeds=0,1,2 --workdir=DIR` runs every (arm, seed) as a full run of the loop in DIR/ARM/seedS
(same proposals, same ladder, `config.seed` = S), and writes DIR/experiment.json and
DIR/experiment.html: per arm, the best top-rung validation bpb of a discovered design (mean +- sd
over seeds), its delta against the GPT seed at the top rung (< 0: better) and parameter ratio, the
area under the best-so-far curve, the valid-design rate and the wall time. Running it again resumes:
a finished run is read back, an unfinished one continues where it stopped (the loop is resumable).

Arms (the original's ablations, its Table 2): `gp` the evolution as configured; `random` scratch
designs only, no parent selection ("no evolution"); `mutation_only`; `islands` the configured
evolution on `evolution.islands` sub-populations (4 if the config has none). Later arms (LLM
designers) plug in by adding an entry to ARMS.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (data only) without CUDA noise

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402

# The launch command's --config and --workdir flags and its one-line flag errors.
from gab import atomic  # noqa: E402
from genesys_jax.launch import _CONFIG, _WORKDIR, parse_flags  # noqa: E402


def _modes(**probs: float) -> Callable[[ml_collections.ConfigDict], None]:
  def apply(c: ml_collections.ConfigDict) -> None:
    c.evolution.mode_probs = {**dict(scratch=0.0, mutation=0.0, crossover=0.0), **probs}
  return apply


def _islands(c: ml_collections.ConfigDict) -> None:
  c.evolution.islands = c.evolution.islands or 4


ARMS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {
    "gp": lambda c: None,
    "random": _modes(scratch=1.0),
    "mutation_only": _modes(mutation=1.0),
    "islands": _islands,
}


def arm_config(config: ml_collections.ConfigDict, arm: str, seed: int) -> ml_collections.ConfigDict:
  if arm not in ARMS:
    raise ValueError(f"unknown arm {arm!r}: expected one of {', '.join(ARMS)}")
  c = copy.deepcopy(config)
  with c.unlocked():
    c.seed = seed
    ARMS[arm](c)
  return c


def run_summary(store: Any, rungs: list[str], n_proposals: int) -> dict[str, Any]:
  """What one run found, from its store (see the module docstring for each field)."""
  from genesys_jax import leaderboard  # pylint: disable=g-import-not-at-top
  boards = leaderboard.by_rung(store, rungs)
  top = boards[rungs[-1]]
  gpt = next((r for r in top if r["is_seed"] and r["description"] == "gpt"), None)
  found = [r for r in top if not r["is_seed"] and r["val_bpb"] is not None]
  best = min(found, key=lambda r: r["val_bpb"]) if found else None
  low = {r["id"]: r["val_bpb"] for r in boards[rungs[0]] if r["val_bpb"] is not None}
  gpt_low = next((r["val_bpb"] for r in boards[rungs[0]] if r["is_seed"] and r["description"] == "gpt"
                  and r["val_bpb"] is not None), None)
  proposals = [d for d in store.designs() if d["operator"] != "seed"]
  curve, best_so_far = [], None
  for d in proposals[:n_proposals]:
    if low.get(d["id"]) is not None:
      best_so_far = low[d["id"]] if best_so_far is None else min(best_so_far, low[d["id"]])
    curve.append(best_so_far if best_so_far is not None else gpt_low)
  return {
      "proposals": len(proposals), "valid": sum(d["status"] != "rejected" for d in proposals),
      "valid_rate": sum(d["status"] != "rejected" for d in proposals) / max(len(proposals), 1),
      "top_rung": rungs[-1], "top_discovered": len(found),
      "gpt_top_bpb": None if gpt is None else gpt["val_bpb"],
      "best_top_bpb": None if best is None else best["val_bpb"],
      "best_top_id": None if best is None else best["id"],
      "best_top_change": None if best is None else f"[{best['operator']}] {best['description']}",
      "delta_gpt_top": None if best is None else best["delta_gpt"],
      "param_ratio_top": None if best is None else best["param_ratio"],
      "beat_gpt_top": None if best is None or best["delta_gpt"] is None else best["delta_gpt"] < 0,
      "best_so_far": curve, "auc_best_so_far": statistics.fmean(curve) if any(
          x is not None for x in curve) and None not in curve else None,
  }


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None, int]:
  xs = [x for x in values if x is not None]
  if not xs:
    return None, None, 0
  return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def table(runs: list[dict[str, Any]], arms: list[str]) -> list[dict[str, Any]]:
  """Per arm: mean, sd and n over its finished seeds of each run figure."""
  out = []
  for arm in arms:
    mine = [r for r in runs if r["arm"] == arm and r["complete"]]
    row: dict[str, Any] = {"arm": arm, "seeds": [r["seed"] for r in mine]}
    for field in ("best_top_bpb", "delta_gpt_top", "param_ratio_top", "gpt_top_bpb",
                  "auc_best_so_far", "valid_rate", "wall_s", "top_discovered"):
      row[field], row[field + "_sd"], row[field + "_n"] = _mean_sd([r[field] for r in mine])
    row["beat_gpt_top"] = sum(bool(r["beat_gpt_top"]) for r in mine)
    out.append(row)
  return out


def run_one(config: ml_collections.ConfigDict, arm: str, seed: int, workdir: str,
            log: Callable[[str], None]) -> dict[str, Any]:
  """One (arm, seed): read back if finished, else run (or resume) it; its summary."""
  from evolution.store import Store  # pylint: disable=g-import-not-at-top
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  wd = os.path.join(workdir, arm, f"seed{seed}")
  path = os.path.join(wd, "experiment_run.json")
  previous = {}
  if os.path.exists(path):  # written once, when the run is complete
    with open(path) as f:
      previous = json.load(f)
  clock = _WallClock(os.path.join(wd, "experiment_wall.json"))
  if previous.get("complete"):
    log(f"{arm} seed {seed}: finished earlier ({wd})")
    if not os.path.exists(os.path.join(wd, "report", "index.html")):
      _write_report(wd)  # a run made with --config.report=False: its page for the table's link
    return previous
  c = arm_config(config, arm, seed)
  os.makedirs(wd, exist_ok=True)
  log(f"{arm} seed {seed}: running in {wd}")
  with open(os.path.join(wd, "log.txt"), "a") as f:
    def tee(line: str) -> None:
      f.write(line + "\n")
      f.flush()
      clock.save()
    try:
      loop.run(c, wd, log=tee)
    finally:
      clock.save(force=True)
  wall = clock.total()
  store = Store.open(wd)
  try:
    summary = run_summary(store, list(c.ladder.rungs), c.evolution.n_proposals)
  finally:
    store.close()
  _write_report(wd)
  result = {"arm": arm, "seed": seed, "workdir": wd, "complete": True, "wall_s": wall, **summary}
  atomic.write(path, json.dumps(result, indent=1, sort_keys=True))
  log(f"{arm} seed {seed}: best top-rung bpb {result['best_top_bpb']} (GPT {result['gpt_top_bpb']}), "
      f"{wall:.0f} s")
  return result


class _WallClock:
  """The wall time of one (arm, seed) run summed over every process that worked on it: each
  process adds its own elapsed time to what the file held when it started, saving at most every
  `every_s` seconds (on the run's log lines) and when it ends, so a process that crashes or is
  killed loses at most that much."""

  def __init__(self, path: str, every_s: float = 10.0):
    self.path, self.every_s = path, every_s
    self.before = float(json.load(open(path))["wall_s"]) if os.path.exists(path) else 0.0
    self.t0 = self.saved = time.perf_counter()

  def total(self) -> float:
    return self.before + time.perf_counter() - self.t0

  def save(self, force: bool = False) -> None:
    now = time.perf_counter()
    if not force and now - self.saved < self.every_s:
      return
    self.saved = now
    atomic.write(self.path, json.dumps({"wall_s": self.total()}))


def _write_report(wd: str) -> None:
  from genesys_jax.report import site  # pylint: disable=g-import-not-at-top
  site.write(wd)


def experiment(config: ml_collections.ConfigDict, arms: list[str], seeds: list[int], workdir: str,
               log: Callable[[str], None] = print) -> dict[str, Any]:
  for arm in arms:
    arm_config(config, arm, 0)  # bad arm names fail before anything runs
  runs = []
  for seed in seeds:  # seed-major: a stopped experiment has every arm at the same number of seeds
    for arm in arms:
      runs.append(run_one(config, arm, seed, workdir, log))
      write_results(workdir, config, arms, seeds, runs)
  return write_results(workdir, config, arms, seeds, runs)


def write_results(workdir: str, config: ml_collections.ConfigDict, arms: list[str], seeds: list[int],
                  runs: list[dict[str, Any]]) -> dict[str, Any]:
  from genesys_jax.report import experiment_page  # pylint: disable=g-import-not-at-top
  doc = {"arms": arms, "seeds": seeds, "rungs": list(config.ladder.rungs),
         "n_proposals": config.evolution.n_proposals, "table": table(runs, arms), "runs": runs}
  atomic.write(os.path.join(workdir, "experiment.json"), json.dumps(doc, indent=1, sort_keys=True))
  experiment_page.write(workdir, doc)
  return doc


_ARMS = flags.DEFINE_list("arms", ["gp", "random"], f"Arms, of {', '.join(ARMS)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    print(f"error: --seeds must be integers separated by commas, got {','.join(_SEEDS.value)}",
          file=sys.stderr)
    sys.exit(2)
  try:
    os.makedirs(_WORKDIR.value, exist_ok=True)
    doc = experiment(_CONFIG.value, list(_ARMS.value), seeds, _WORKDIR.value,
                     log=lambda line: print(line, flush=True))
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(doc["table"], indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
