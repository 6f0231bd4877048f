"""The evolution loop: propose -> check -> record -> verify -> select, resumable from the store.

Every proposal `i` draws its randomness from `fold_in(key(seed), i)` and from the store's history,
which is committed one transaction per step; so a run restarted on the same workdir continues
exactly where it stopped, and the same config and seed give the same designs in the same order.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import ml_collections

from evolution import operators, selection
from genesys_jax import ladder
from evolution.store import Store
from gab import checker, seeds
from gab.tree import Unit, design_from_json, design_to_json
from train import data as data_lib
from train import trainer

Log = Callable[[str], None]
_PROMOTION_STREAM = 1 << 30  # fold_in salt: promotion draws never collide with proposal draws


def _print(line: str) -> None:
  print(line, flush=True)


def rung_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  if name not in config.rungs:
    raise ValueError(f"ladder.rungs names {name!r}, but config.rungs has only {sorted(config.rungs)}")
  return config.rungs[name]


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str, log: Log) -> None:
  """Keep the resolved config with the run; warn when a resumed run's config differs."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(sort_keys=True, indent=1)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() != text:
        log(f"warning: config differs from the one recorded in {path}; continuing with the new one")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


class Evolution:
  """One run of the loop over a workdir."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Log = _print):
    self.config, self.workdir, self.log = config, workdir, log
    self.rungs = list(config.ladder.rungs)
    if not self.rungs:
      raise ValueError("config.ladder.rungs is empty: expected at least one rung name")
    for name in self.rungs:
      rung_config(config, name)
    os.makedirs(workdir, exist_ok=True)
    write_resolved_config(config, workdir, log)
    self.store = Store.open(workdir)
    self.key = jax.random.key(config.seed)
    self._data = None

  @property
  def data(self) -> data_lib.Corpus:
    if self._data is None:
      self._data = data_lib.load_corpus(self.config.data)
    return self._data

  # -- stages --------------------------------------------------------------------------------
  def add_seeds(self) -> None:
    for name in self.config.seeds:
      tree = seeds.seed(name)
      if self.store.has_design(tree.content_hash()):
        continue
      report = checker.check(tree, self.config.checker)
      self.store.add_design(tree.content_hash(), design_to_json(tree, name), [], "seed", name,
                            "valid" if report.passed else "rejected", report.to_dict())
      self.log(f"seed {name} {tree.content_hash()}: {report.summary()}")

  def candidates(self) -> list[dict[str, Any]]:
    """Verified designs (and unverified seeds) with their fitness at the lowest rung."""
    metrics = {v["design_id"]: v["metrics"] for v in self.store.verifications() if v["rung"] == self.rungs[0]}
    return [{"id": d["id"], "tree": d["tree"],
             "fitness": selection.fitness(metrics[d["id"]]) if d["id"] in metrics else None}
            for d in self.store.designs() if d["id"] in metrics]

  def propose(self, index: int) -> tuple[Unit, dict[str, Any], str]:
    """A new child (never one already stored) of a selected parent, from proposal `index`'s key."""
    key = jax.random.fold_in(self.key, index)
    pool = self.candidates()
    for attempt in range(self.config.evolution.max_retries):
      k_select, k_mutate = jax.random.split(jax.random.fold_in(key, attempt))
      parent = selection.select_parent(k_select, pool, self.config.evolution.exploit_prob)
      tree, _ = design_from_json(parent["tree"])
      child, description = operators.mutate(k_mutate, tree)
      if not self.store.has_design(child.content_hash()):
        return child, parent, description
    raise RuntimeError(f"proposal {index}: {self.config.evolution.max_retries} tries gave only "
                       f"designs already in the store; raise evolution.max_retries")

  def verify(self, design: dict[str, Any], rung: str) -> None:
    """Train `design` at `rung` and record the result (a failure is recorded too, with its error)."""
    tree, _ = design_from_json(design["tree"])
    self.log(f"  training {design['id']} at rung {rung} ...")
    where = (design["id"], rung)
    try:
      metrics = trainer.train_and_evaluate(
          tree, rung_config(self.config, rung), self.data, seed=self.config.seed,
          checkpoint_dir=os.path.join(self.workdir, "checkpoints", *where),
          log_dir=os.path.join(self.workdir, "tensorboard", *where), train_cfg=self.config.train,
          desc=f"{design['id'][:8]}@{rung}")
    except FloatingPointError as e:
      with self.store.transaction():
        self.store.add_verification(design["id"], rung, {"val_bpb": None, "params": None,
                                                         "tokens": None, "error": str(e)})
        if rung == self.rungs[0]:
          self.store.set_status(design["id"], "failed")
      self.log(f"  {design['id']} failed at {rung}: {e}")
      return
    with self.store.transaction():
      self.store.add_verification(design["id"], rung, metrics)
      self.store.set_status(design["id"], "verified")
    self.log(f"  {design['id']} @ {rung}: val_bpb {metrics['val_bpb']:.4f}, "
             f"{metrics['params']:,} params, {metrics['tokens']:,} tokens, "
             f"{metrics['tokens_per_s']:,.0f} tok/s")

  def next_promotion(self) -> tuple[dict[str, Any], str] | None:
    """The (design, rung) a verifier should train next above the lowest rung, if a slot is open."""
    results: dict[str, dict[str, Any]] = {r: {} for r in self.rungs}
    for v in self.store.verifications():
      results[v["rung"]][v["design_id"]] = v["metrics"]
    ladder_cfg = self.config.ladder
    budget = ladder.budgets(len(self.rungs), ladder_cfg.n_target, ladder_cfg.ratio)
    used = [len(results[r]) for r in self.rungs]
    i = ladder.next_rung(budget, used, ladder_cfg.ratio)
    if i is None:
      return None
    below, here = results[self.rungs[i - 1]], results[self.rungs[i]]
    pool = [{"id": d["id"], "design": d, "fitness": selection.fitness(below[d["id"]]),
             "confidence": sum(d["id"] in results[r] for r in self.rungs)}
            for d in self.store.designs()
            if d["id"] in below and below[d["id"]]["val_bpb"] is not None and d["id"] not in here]
    if not pool:
      return None
    key = jax.random.fold_in(jax.random.fold_in(self.key, _PROMOTION_STREAM), sum(used))
    pick = selection.select_parent(key, pool, ladder_cfg.exploit_prob)
    return pick["design"], self.rungs[i]

  def verify_pending(self) -> None:
    for design in self.store.designs("valid"):
      self.verify(design, self.rungs[0])
    while (job := self.next_promotion()) is not None:
      design, rung = job
      self.log(f"  promoting {design['id']} to rung {rung}")
      self.verify(design, rung)

  def run(self) -> list[dict[str, Any]]:
    self.add_seeds()
    self.verify_pending()
    n = self.config.evolution.n_proposals
    done = self.store.get_meta("proposals_done", 0)
    if done:
      self.log(f"resuming {self.workdir}: {done}/{n} proposals already made")
    for index in range(done, n):
      child, parent, description = self.propose(index)
      report = checker.check(child, self.config.checker)
      status = "valid" if report.passed else "rejected"
      with self.store.transaction():
        self.store.add_design(child.content_hash(), design_to_json(child), [parent["id"]], "mutation",
                              description, status, report.to_dict())
        self.store.set_meta("proposals_done", index + 1)
      self.log(f"[{index + 1}/{n}] {child.content_hash()} from {parent['id']} ({description}): "
               f"{report.summary()}")
      self.verify_pending()
    board = self.leaderboard()
    self.log(format_leaderboard(board, self.rungs))
    return board

  def leaderboard(self) -> list[dict[str, Any]]:
    """Verified designs, best validation bpb at the lowest rung first, with every rung's result."""
    results: dict[str, dict[str, Any]] = {}
    for v in self.store.verifications():
      results.setdefault(v["design_id"], {})[v["rung"]] = v["metrics"]
    rows = []
    for d in self.store.designs():
      if d["id"] not in results:
        continue
      low = results[d["id"]].get(self.rungs[0], {})
      rows.append({"id": d["id"], "parent": ",".join(d["parents"]) or "-",
                   "change": d["description"] if d["operator"] != "seed" else f"seed {d['description']}",
                   "params": low.get("params"), "val_bpb": low.get("val_bpb"),
                   "rungs": {r: results[d["id"]][r]["val_bpb"] for r in self.rungs if r in results[d["id"]]}})
    return sorted(rows, key=lambda r: (r["val_bpb"] is None, r["val_bpb"] or 0.0))


def format_leaderboard(rows: list[dict[str, Any]], rungs: list[str]) -> str:
  """A table: design, parent, params and bpb at the lowest rung, bpb at each higher rung, change."""
  head = (f"{'rank':>4}  {'design':16}  {'parent':16}  {'params':>10}  "
          + "  ".join(f"{r:>8}" for r in rungs) + "  change")
  lines = ["leaderboard (validation bits per byte per rung)", head, "-" * len(head)]
  for i, r in enumerate(rows, 1):
    params = "-" if r["params"] is None else f"{r['params']:,}"
    bpbs = "  ".join(f"{r['rungs'][g]:>8.4f}" if r["rungs"].get(g) is not None else f"{'-':>8}"
                     for g in rungs)
    lines.append(f"{i:>4}  {r['id']:16}  {r['parent']:16}  {params:>10}  {bpbs}  {r['change']}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str, log: Log = _print) -> list[dict[str, Any]]:
  evo = Evolution(config, workdir, log)
  try:
    return evo.run()
  finally:
    evo.store.close()
