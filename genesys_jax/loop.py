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
from evolution.store import Store
from gab import checker, seeds
from gab.tree import Unit, design_from_json, design_to_json
from train import data as data_lib
from train import trainer

Log = Callable[[str], None]


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

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Log = print):
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
    tree, _ = design_from_json(design["tree"])
    self.log(f"  training {design['id']} at rung {rung} ...")
    ckpt = os.path.join(self.workdir, "checkpoints", design["id"], rung)
    try:
      metrics = trainer.train_and_evaluate(tree, rung_config(self.config, rung), self.data,
                                           seed=self.config.seed, checkpoint_dir=ckpt,
                                           desc=f"{design['id'][:8]}@{rung}")
    except FloatingPointError as e:
      with self.store.transaction():
        self.store.set_status(design["id"], "failed")
      self.log(f"  {design['id']} failed at {rung}: {e}")
      return
    with self.store.transaction():
      self.store.add_verification(design["id"], rung, metrics)
      self.store.set_status(design["id"], "verified")
    self.log(f"  {design['id']} @ {rung}: val_bpb {metrics['val_bpb']:.4f}, "
             f"{metrics['params']:,} params, {metrics['tokens']:,} tokens, "
             f"{metrics['tokens_per_s']:,.0f} tok/s")

  def verify_pending(self) -> None:
    for design in self.store.designs("valid"):
      self.verify(design, self.rungs[0])

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
    self.log(format_leaderboard(board))
    return board

  def leaderboard(self) -> list[dict[str, Any]]:
    rows = []
    verifications = self.store.verifications()
    for d in self.store.designs():
      results = {v["rung"]: v["metrics"] for v in verifications if v["design_id"] == d["id"]}
      if not results:
        continue
      low = results.get(self.rungs[0])
      rows.append({"id": d["id"], "parent": ",".join(d["parents"]) or "-",
                   "change": d["description"] if d["operator"] != "seed" else f"seed {d['description']}",
                   "params": low["params"] if low else None, "val_bpb": low["val_bpb"] if low else None,
                   "rungs": {r: m["val_bpb"] for r, m in results.items()}})
    return sorted(rows, key=lambda r: (r["val_bpb"] is None, r["val_bpb"] or 0.0))


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
  head = f"{'rank':>4}  {'design':16}  {'parent':16}  {'params':>10}  {'val_bpb':>8}  change"
  lines = ["leaderboard", head, "-" * len(head)]
  for i, r in enumerate(rows, 1):
    bpb = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.4f}"
    params = "-" if r["params"] is None else f"{r['params']:,}"
    lines.append(f"{i:>4}  {r['id']:16}  {r['parent']:16}  {params:>10}  {bpb:>8}  {r['change']}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str, log: Log = print) -> list[dict[str, Any]]:
  evo = Evolution(config, workdir, log)
  try:
    return evo.run()
  finally:
    evo.store.close()
