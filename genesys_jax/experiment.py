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

import ml_collections
from absl import app, flags

# The launch command's --config and --workdir flags and its one-line flag errors.
from gab import atomic
from genesys_jax.launch import _CONFIG, _WORKDIR, parse_flags


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


def run_summary(workdir: str, store: Any, n_proposals: int) -> dict[str, Any]:
  """What one run found, from its workdir and store (see the module docstring for each field)."""
  from genesys_jax.report import gather  # pylint: disable=g-import-not-at-top
  run = gather.load(workdir, store)
  rungs = run.rungs
  top = run.boards[rungs[-1]]
  gpt = next((r for r in top if r["is_seed"] and r["description"] == "gpt"), None)
  found = [r for r in top if not r["is_seed"] and r["val_bpb"] is not None]
  best = min(found, key=lambda r: r["val_bpb"]) if found else None
  gpt_low = next((r["val_bpb"] for r in run.boards[rungs[0]] if r["is_seed"] and r["description"] == "gpt"
                  and r["val_bpb"] is not None), None)
  proposals = [d for d in run.designs if d["operator"] != "seed"]
  # The report's best-so-far at the lowest rung; the GPT seed's value before any discovered result.
  curve = [gpt_low if y is None else y for y in gather.best_so_far(run, rungs[0])[1][:n_proposals]]
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
      "best_so_far": curve,
      "auc_best_so_far": statistics.fmean(curve) if curve and None not in curve else None,
  }


def format_table(doc: dict[str, Any]) -> str:
  """The per-arm table as text (mean ± sd over the finished seeds; '-' where there is none)."""
  def num(row, field, spec=".4f"):
    x, sd = row[field], row.get(field + "_sd")
    if x is None:
      return "-"
    return format(x, spec) + ("" if sd is None else f" ± {format(sd, spec.lstrip('+'))}")
  rows = [("arm", "seeds", "best top-rung bpb", "GPT there", "Δ vs GPT", "params/GPT", "beat GPT",
           "AUC best-so-far", "valid rate", "wall s")]
  for r in doc["table"]:
    rows.append((r["arm"], str(len(r["seeds"])), num(r, "best_top_bpb"), num(r, "gpt_top_bpb"),
                 num(r, "delta_gpt_top", "+.4f"), num(r, "param_ratio_top", ".3f"),
                 f"{r['beat_gpt_top']}/{len(r['seeds'])}", num(r, "auc_best_so_far"),
                 num(r, "valid_rate", ".2f"), num(r, "wall_s", ".0f")))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = [f"rungs {' -> '.join(doc['rungs'])}, {doc['n_proposals']} proposals per run; Δ < 0: a "
           "discovered design beat the GPT seed at the top rung"]
  for k, row in enumerate(rows):
    lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    if k == 0:
      lines.append("-" * len(lines[-1]))
  return "\n".join(lines)


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None, int]:
  """(mean, sample sd, n) of the values given; sd None below two values (unknown, not 0)."""
  xs = [x for x in values if x is not None]
  if not xs:
    return None, None, 0
  return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


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
  log(f"{arm} seed {seed}: running in {wd} (its log: log.txt there)")
  with open(os.path.join(wd, "log.txt"), "a") as f:
    def tee(text: str) -> None:
      f.write(text + "\n")
      f.flush()
      for line in text.splitlines():  # the run's progress, told apart from the other runs'
        log(f"{arm} seed {seed} | {line}")
      clock.save()
    try:
      loop.run(c, wd, log=tee)
    finally:
      clock.save(force=True)
      _release_memory()
  wall = clock.total()
  store = Store.open(wd)
  try:
    summary = run_summary(wd, store, c.evolution.n_proposals)
  finally:
    store.close()
  _write_report(wd)
  result = {"arm": arm, "seed": seed, "workdir": wd, "complete": True, "wall_s": wall, **summary}
  atomic.write(path, json.dumps(result, indent=1, sort_keys=True))
  log(f"{arm} seed {seed}: best top-rung bpb {result['best_top_bpb']} (GPT {result['gpt_top_bpb']}), "
      f"{wall:.0f} s")
  return result


def _release_memory() -> None:
  """After a run, before the next in this process: JAX's caches of compiled programs (a run
  compiles its own designs, none of which the next one reuses) and the heap glibc keeps after
  they are freed (measured: a smoke-scale random-arm run left 3.1 GB resident, 2.3 GB after the
  trim)."""
  import ctypes  # pylint: disable=g-import-not-at-top
  import gc  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  jax.clear_caches()
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # not glibc: its allocator keeps what it keeps
    pass


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
      log(f"run {len(runs) + 1}/{len(arms) * len(seeds)}: arm {arm}, seed {seed}")
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
  from genesys_jax import cli  # pylint: disable=g-import-not-at-top  (light)
  cli.quiet_absl_logging()
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    print(f"error: --seeds must be integers separated by commas, got {','.join(_SEEDS.value)}",
          file=sys.stderr)
    sys.exit(2)
  from genesys_jax import interrupt  # pylint: disable=g-import-not-at-top  (light)
  with interrupt.exits_cleanly():  # Ctrl-C, SIGTERM: one line, exit 130; rerun to continue
    try:
      os.makedirs(_WORKDIR.value, exist_ok=True)
      doc = experiment(_CONFIG.value, list(_ARMS.value), seeds, _WORKDIR.value,
                       log=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError, KeyError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  print(format_table(doc))
  print(f"page: {os.path.join(os.path.abspath(_WORKDIR.value), 'experiment.html')} (data: "
        f"experiment.json there; each run's report: ARM/seedS/report/index.html)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
