"""Proposing, the first half of the loop (`genesys_jax.loop.Evolution`): the seeds, then per
proposal a mode and parents drawn from `fold_in(key(seed), index)`, a child never stored before (by
canonical form), its checker verdict and novelty test, all recorded in one transaction with the
proposal counter, or (checks in verifier workers) recorded as `checking` and given its verdict at
the generation's barrier (`apply_check`, called by `controller.settle_checks`).
"""

from __future__ import annotations

from typing import Any

import jax

from evolution import canonical, operators, selection
from evolution.designers import config as designer_config
from evolution.store import CHECK_JOB
from gab import checker
from gab.tree import Unit, design_from_json
from genesys_jax import check_guard, code_units, controller, islands
from genesys_jax import jobs as jobs_lib

_PARENTS_PER_MODE = {"scratch": 0, "mutation": 1, "crossover": 2}


def _novelty_failure(twin: str) -> checker.Check:
  return checker.Check("novelty", checker.FAIL, f"computes the same function as stored design {twin}",
                       "change what the block computes, not only how it is written")


class Proposing:
  """The proposing methods of `Evolution`: they use its config, key, rungs, store, log, designers,
  bounds, islands and `rung`/`checker_config`."""

  def check(self, tree: Unit) -> checker.Report:
    """The checker's report on `tree` (code units run only in the sandbox; other designs under
    `check_guard`); the fingerprint of a design that passed is kept for `duplicate_of`."""
    cfg, rung = self.checker_config(), self.rung(self.rungs[0])
    report, self._fingerprints[tree.content_hash()] = code_units.check_tree(
        tree, cfg, rung, in_process=lambda: check_guard.guarded(
            self.workdir, tree, lambda progress: checker.check(tree, cfg, rung, progress), self.log))
    return report

  def add_seeds(self) -> None:
    for name in self.config.seeds:
      tree, name = code_units.seed(name)  # a built-in seed, or a design file (maybe with code units)
      if self.store.has_design(tree.content_hash()):
        continue
      report = self.check(tree)
      fingerprint = self._fingerprints.get(tree.content_hash())
      with self.store.transaction():
        if not self.store.add_design(tree.content_hash(), code_units.design_json(tree, name), [],
                                     "seed", name, "valid" if report.passed else "rejected",
                                     report.to_dict()):
          continue  # recorded meanwhile (by an earlier run that stopped here): nothing to add
        code_units.record(self.store, tree, tree.content_hash())
        if fingerprint is not None:
          self.store.add_artifact(tree.content_hash(), "fingerprint", fingerprint)
        if self.n_islands:
          islands.save(self.store, islands.add_seed(islands.load(self.store, self.n_islands),
                                                    tree.content_hash()))
      self.log(f"seed {name} {tree.content_hash()}: {report.summary()}")

  def _draw(self, index: int, attempt: int, pool: list[dict[str, Any]]):
    """(mode, parents, operator key) of try `attempt` of proposal `index`."""
    evo = self.config.evolution
    k_mode, k_select, k_op = jax.random.split(jax.random.fold_in(jax.random.fold_in(self.key, index), attempt), 3)
    mode = operators.choose_mode(k_mode, dict(evo.mode_probs), len(pool), len(pool))
    parents = selection.select_parents(
        k_select, pool, _PARENTS_PER_MODE[mode], evo.exploit_prob, evo.top_fraction, evo.seed_prob,
        self.rungs, evo.zeroshot_weight) if _PARENTS_PER_MODE[mode] else []
    return mode, parents, k_op

  def select(self, index: int) -> tuple[str, list[dict[str, Any]]]:
    """GP's choice of mode and parents for proposal `index`, for an LLM designer to work on."""
    designs = selection.designs_from_store(self.store, self.rungs)
    pool = [d for d in designs if any(m.get("val_bpb") is not None for m in d["metrics"].values())]
    mode, parents, _ = self._draw(index, 0, self._island_pool(index, pool))
    return mode, parents

  def _island_pool(self, index: int, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With islands, the pool of the island drawn for proposal `index` (kept in `self.island`)."""
    if not self.n_islands:
      return pool
    isles = islands.load(self.store, self.n_islands)
    self.island = islands.choose(jax.random.fold_in(self.key, index), isles)
    return islands.restrict(pool, isles, self.island)

  def known_canonical_ids(self) -> set[str]:
    return {canonical.canonical_id(design_from_json(d["tree"])[0]) for d in self.store.designs()}

  def propose(self, index: int) -> tuple[Unit, list[str], str, str]:
    """(child, parent ids, mode, description) for proposal `index`, never a design already stored
    (by canonical form); the mode is drawn from `evolution.mode_probs`."""
    evo = self.config.evolution
    designs = selection.designs_from_store(self.store, self.rungs)
    pool = [d for d in designs if any(m.get("val_bpb") is not None for m in d["metrics"].values())]
    known = {canonical.canonical_id(design_from_json(d["tree"])[0]) for d in designs}
    pool = self._island_pool(index, pool)
    for attempt in range(evo.max_retries):
      mode, parents, k_op = self._draw(index, attempt, pool)
      trees = [design_from_json(p["tree"])[0] for p in parents]
      child, mode, description = operators.propose(k_op, trees, dict(evo.mode_probs), len(pool),
                                                   self.bounds, mode=mode)
      if canonical.canonical_id(child) not in known:
        used = {"scratch": 0, "mutation": 1}.get(mode, len(parents))  # what a fallback really used
        return child, [p["id"] for p in parents[:used]], mode, description
    raise RuntimeError(f"proposal {index}: {evo.max_retries} tries gave only designs already in the "
                       f"store; raise evolution.max_retries")

  def duplicate_of(self, tree: Unit) -> tuple[str, str | None]:
    """The fingerprint of `tree` and the id of another stored design computing the same function."""
    fp = self._fingerprints.get(tree.content_hash())  # recorded by `check` if it passed
    if fp is None and not code_units.uses_code(tree):  # not checked here: a code unit's is the sandbox's
      fp = canonical.fingerprint(tree)
    return fp, self.twin_of(tree.content_hash(), fp)

  def twin_of(self, design_id: str, fp: str | None) -> str | None:
    """Another stored design whose fingerprint is `fp` (None: none, or no fingerprint)."""
    if fp is None:
      return None
    for art in self.store.artifacts(kind="fingerprint"):
      if art["content"] == fp and art["design_id"] != design_id:
        return art["design_id"]
    return None

  def step(self, index: int, n: int) -> None:
    """Propose, check and record one child, atomically with the proposal counter (with checks in
    verifier workers: record it as `checking` with its checker job; `apply_check` gives the verdict)."""
    designer = designer_config.choose(self.config, self.key, index)
    if designer != "gp":
      controller.settle_checks(self)  # its retries and novelty test see every earlier verdict
      return self.designers.step(self, index, n, designer)
    child, parents, mode, description = self.propose(index)
    if jobs_lib.checks_in_workers(self.config):  # checked by a worker; applied at the barrier
      return self._record(index, n, child, parents, mode, description, None)
    report = self.check(child)
    fingerprint, twin = self.duplicate_of(child) if report.passed else (None, None)
    if twin is not None:
      report.checks.append(_novelty_failure(twin))
    self._record(index, n, child, parents, mode, description, report,
                 fingerprint if twin is None else None)

  def _record(self, index: int, n: int, child: Unit, parents: list[str], mode: str, description: str,
              report: checker.Report | None, fingerprint: str | None = None) -> None:
    """Record proposal `index` with its verdict, or (`report` None) as `checking`, with its checker
    job, in one transaction with the proposal counter."""
    with self.store.transaction():
      cid = child.content_hash()
      if report is None:
        status, stored = "checking", {"checking": True, "proposal": index}
      else:
        status, stored = "valid" if report.passed else "rejected", report.to_dict()
      added = self.store.add_design(cid, code_units.design_json(child), parents, mode, description,
                                    status, stored)
      if added:
        code_units.record(self.store, child, cid)
      if added and report is None:
        self.store.enqueue(cid, CHECK_JOB)
      if added and fingerprint is not None:
        self.store.add_artifact(cid, "fingerprint", fingerprint)
      self.store.set_meta("proposals_done", index + 1)
      if self.n_islands:
        isles = islands.add_child(islands.load(self.store, self.n_islands), cid, parents, self.island)
        islands.save(self.store, islands.after_proposal(
            self.key, isles, index + 1, self.config.evolution.get("migrate_every", 4),
            selection.designs_from_store(self.store, self.rungs), self.rungs[0]))
    if report is not None:
      self._log_proposal(index, n, cid, mode, parents, description, report)
    else:
      self.log(f"[{index + 1}/{n}] {cid} {mode} from {','.join(parents) or '-'} ({description}): "
               f"queued for a verifier worker's check")

  def _log_proposal(self, index: int, n: int, cid: str, mode: str, parents: list[str],
                    description: str, report: checker.Report) -> None:
    self.log(f"[{index + 1}/{n}] {cid} {mode} from {','.join(parents) or '-'} ({description}): "
             f"{report.summary()}")

  def apply_check(self, design: dict[str, Any], result: dict[str, Any]) -> None:
    """Give a `checking` design the verdict its checker job recorded, as `step` would have given it
    in-process: the novelty test against the fingerprints recorded before it, the same status,
    report, fingerprint artifact and log line. Called in proposal order (controller.settle_checks)."""
    report = checker.Report([checker.Check(**c) for c in result["report"]["checks"]],
                            result["report"].get("sizing", {}))
    fingerprint = result.get("fingerprint") if report.passed else None
    twin = self.twin_of(design["id"], fingerprint)
    if twin is not None:
      report.checks.append(_novelty_failure(twin))
    with self.store.transaction():
      self.store.set_status(design["id"], "valid" if report.passed else "rejected", report.to_dict())
      if fingerprint is not None and twin is None:
        self.store.add_artifact(design["id"], "fingerprint", fingerprint)
    self._log_proposal(design["report"]["proposal"], self.config.evolution.n_proposals, design["id"],
                       design["operator"], design["parents"], design["description"], report)
