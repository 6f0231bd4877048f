"""The evolution loop: propose -> check -> record -> verify on the ladder -> select, resumable.

Every proposal `i` draws its randomness from `fold_in(key(seed), i)` and from the store's history,
and every promotion from the number of verifications so far; the store commits one transaction per
step. So a run restarted on the same workdir (after any crash) continues exactly where it stopped,
and the same config and seed give the same designs in the same order (`replay_from` checks it).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable

import jax
import ml_collections

from evolution import canonical, integrity, operators, selection
from evolution.designers import config as designer_config
from evolution.store import CHECK_JOB, Store
from gab import checker, seeds, sizing
from gab.tree import DesignError, Unit, design_from_json, design_to_json
from genesys_jax import (check_guard, code_units, controller, islands, ladder, leaderboard, replay,
                         resolve, runlock, validate)
from genesys_jax import jobs as jobs_lib
from genesys_jax.report import site as report_site
from gab import sandbox
from train import data as data_lib
from train import trainer

Log = Callable[[str], None]
_PROMOTION_STREAM = 1 << 30  # fold_in salt: promotion draws never collide with proposal draws
_PARENTS_PER_MODE = {"scratch": 0, "mutation": 1, "crossover": 2}
# What a design can do wrong in training that the checker could not foresee (divergence, out of
# memory at a larger rung, a width its hyperparameters do not fit): recorded as a failed
# verification, so a restarted run does not stumble on the same design again. Anything else is a
# bug or a bad config and stops the run.
_DESIGN_FAILURES = (FloatingPointError, DesignError, jax.errors.JaxRuntimeError,
                    sandbox.DesignFailure, sandbox.SandboxError)


def _novelty_failure(twin: str) -> checker.Check:
  return checker.Check("novelty", checker.FAIL, f"computes the same function as stored design {twin}",
                       "change what the block computes, not only how it is written")


def _print(line: str) -> None:
  print(line, flush=True)


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str, log: Log) -> str:
  """Keep the resolved config with the run; warn when a resumed run's config differs."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(sort_keys=True, indent=1)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() != text:
        log(f"warning: config differs from the one recorded in {path}; continuing with the new one")
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):  # a full disk leaves no half-written config.json.tmp
      os.remove(tmp)
    if isinstance(e, OSError) and not e.filename:  # a failed write() names no file: name it
      raise OSError(e.errno, e.strerror, tmp) from None
    raise
  return text


class Evolution:
  """One run of the loop over a workdir."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Log = _print):
    config = resolve.resolve(config)  # rungs' seq_len, the checker's vocab_size: once, for the run
    self.config, self.workdir, self.log = config, workdir, log
    self.rungs = list(config.ladder.rungs)
    if not self.rungs:
      raise ValueError("config.ladder.rungs is empty: expected at least one rung name")
    missing = [r for r in self.rungs if r not in config.rungs]
    if missing:
      raise ValueError(f"ladder.rungs names {missing}, but config.rungs has only {sorted(config.rungs)}")
    api_key = designer_config.validate(config)  # an LLM run without a key fails here, before any write
    os.makedirs(workdir, exist_ok=True)
    self.config_json = write_resolved_config(config, workdir, log)
    self.store = controller.open_store(config, workdir)  # SQLite in the workdir, or config.store.url
    self.key = jax.random.key(config.seed)
    self.designers = None
    if config.get("designer") and config.designer.kind != "gp":
      from genesys_jax.designers import LLMDesigners  # pylint: disable=g-import-not-at-top
      self.designers = LLMDesigners(config, self.store, api_key)
    self.bounds = operators.Bounds.from_config(config.evolution)
    self.n_islands = int(config.evolution.get("islands", 0) or 0)
    self._data = None
    self.code_kinds = code_units.setup(config, self.store)  # declared only: no unit code runs here
    self._fingerprints: dict[str, str | None] = {}  # of designs with code units, from the sandbox

  @property
  def data(self) -> data_lib.Corpus:
    if self._data is None:
      self._data = data_lib.load_corpus(self.config.data)
    return self._data

  def rung(self, name: str) -> ml_collections.ConfigDict:
    """The rung's config (resolved: with the context length the data is packed at)."""
    return self.config.rungs[name]

  def checker_config(self) -> ml_collections.ConfigDict:
    """The checker's config (resolved: sizing against the data's real vocabulary)."""
    return self.config.checker

  def check(self, tree: Unit) -> checker.Report:
    if code_units.uses_code(tree):  # its code runs only in the sandbox
      report, self._fingerprints[tree.content_hash()] = code_units.check(
          tree, self.checker_config(), self.rung(self.rungs[0]))
      return report
    return check_guard.guarded(self.workdir, tree, lambda progress: checker.check(
        tree, self.checker_config(), self.rung(self.rungs[0]), progress), self.log)

  # -- proposing -----------------------------------------------------------------------------
  def add_seeds(self) -> None:
    for name in self.config.seeds:
      tree, name = code_units.seed(name)  # a built-in seed, or a design file (maybe with code units)
      if self.store.has_design(tree.content_hash()):
        continue
      report = self.check(tree)
      fingerprint = (self._fingerprints.get(tree.content_hash()) if code_units.uses_code(tree)
                     else canonical.fingerprint(tree))
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
    fp = (self._fingerprints.get(tree.content_hash()) if code_units.uses_code(tree)
          else canonical.fingerprint(tree))
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

  # -- verifying -----------------------------------------------------------------------------
  def verify(self, design: dict[str, Any], rung_name: str) -> None:
    """Train `design` at a rung, sized to its budget; record the result or the failure."""
    tree, _ = design_from_json(design["tree"])
    rung = self.rung(rung_name)
    where = (design["id"], rung_name)
    coded = code_units.uses_code(tree)
    size = {} if coded else sizing.fit_to_rung(tree, rung, self.checker_config())  # sizing runs code
    if size and not size["fits"]:  # checker.size_tolerance holds on every rung, not only the checked one
      return self.record_failure(design, rung_name, f"SizeError: no sizing within "
                                 f"+-{self.config.checker.size_tolerance:.0%} of {rung.target_params:,} "
                                 f"parameters (closest: {size['params']})")
    self.log(f"  training {design['id']} at rung {rung_name} " + (
        "in the sandbox" if coded else f"(d_model {size['d_model']}, {size['n_blocks']} blocks)") + " ...")
    try:
      if coded:
        metrics = code_units.train(
            design, rung, config=self.config, checker_cfg=self.checker_config(),
            checkpoint_dir=os.path.join(self.workdir, "checkpoints", *where),
            log_dir=os.path.join(self.workdir, "tensorboard", *where), desc=f"{design['id'][:8]}@{rung_name}")
      else:
        metrics = trainer.train_and_evaluate(
            tree, rung, self.data, seed=self.config.seed, d_model=size["d_model"],
            n_blocks=size["n_blocks"], checkpoint_dir=os.path.join(self.workdir, "checkpoints", *where),
            log_dir=os.path.join(self.workdir, "tensorboard", *where), train_cfg=self.config.train,
            zeroshot_cfg=self.config.zeroshot, desc=f"{design['id'][:8]}@{rung_name}")
    except _DESIGN_FAILURES as e:
      error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
      return self.record_failure(design, rung_name, error)
    with self.store.transaction():
      self.store.add_verification(design["id"], rung_name, metrics)
      self.store.set_status(design["id"], "verified")
    self.log(f"  {design['id']} @ {rung_name}: val_bpb {metrics['val_bpb']:.4f}, "
             f"{metrics['params']:,} params, {metrics['tokens']:,} tokens")
    self.refresh_report()

  def record_failure(self, design: dict[str, Any], rung_name: str, error: str) -> None:
    with self.store.transaction():
      self.store.add_verification(design["id"], rung_name, {"val_bpb": None, "params": None,
                                                            "tokens": None, "error": error})
      if rung_name == self.rungs[0]:
        self.store.set_status(design["id"], "failed")
    self.log(f"  {design['id']} failed at {rung_name}: {error}")
    self.refresh_report()

  def refresh_report(self) -> None:
    """Rewrite the HTML report (file by file, atomically) so a long run can be watched."""
    if self.config.get("report", True) and not getattr(self, "verifier_only", False):
      try:
        report_site.write(self.workdir, self.store, log=self.log)
      except Exception as e:  # noqa: BLE001 - the report is for watching; it must never stop a run
        self.log(f"warning: the report could not be refreshed ({type(e).__name__}: {e})")

  def next_promotion(self) -> tuple[dict[str, Any], str] | None:
    """The (design, rung) to train next above the lowest rung, if the ladder has an open slot."""
    # Seeds are baselines verified on every rung (verify_baselines): the budget is for discoveries.
    designs = [d for d in selection.designs_from_store(self.store, self.rungs) if not d["is_seed"]]
    used = [sum(r in d["metrics"] for d in designs) for r in self.rungs]
    lad = self.config.ladder
    i = ladder.next_rung(ladder.budgets(len(self.rungs), lad.n_target, lad.ratio), used, lad.ratio)
    if i is None:
      return None
    key = jax.random.fold_in(jax.random.fold_in(self.key, _PROMOTION_STREAM), sum(used))
    pick = selection.select_for_verification(key, designs, self.rungs[i], self.rungs, lad.exploit_prob,
                                             self.config.evolution.top_fraction,
                                             self.config.evolution.zeroshot_weight)
    return None if pick is None else (pick, self.rungs[i])

  def baseline_jobs(self) -> list[tuple[str, str]]:
    """(seed, rung) for every seed that trained at the lowest rung and lacks a higher rung: the
    seeds are baselines on every rung, outside the promotion budget."""
    return [(d["id"], r) for d in self.store.designs("verified") if d["operator"] == "seed"
            for r in self.rungs[1:] if not self.store.has_verification(d["id"], r)]

  def verify_pending(self) -> None:
    """Every valid design at the lowest rung, then the open promotions, as jobs: trained here or
    by verifier workers (genesys_jax/controller.py)."""
    controller.verify_pending(self)

  # -- the run -------------------------------------------------------------------------------
  def run(self) -> list[dict[str, Any]]:
    controller.start(self)
    self.data  # noqa: B018 - prepared before the first check: a bad corpus stops the run here
    self.add_seeds()
    n = self.config.evolution.n_proposals
    done = self.store.get_meta("proposals_done", 0)
    if controller.at_barrier(self.config, done):  # not in the middle of a generation
      self.verify_pending()
    if done:
      self.log(f"resuming {self.workdir}: {done}/{n} proposals already made")
    for index in range(done, n):
      try:
        self.step(index, n)
      except designer_config.BudgetStop as e:
        self.log(f"{e}: stopped cleanly before proposal {index + 1}; raise designer.max_usd and run "
                 f"again on this workdir to resume")
        self.verify_pending()
        break
      if controller.at_barrier(self.config, index + 1):
        self.verify_pending()
    controller.finish(self)
    self.refresh_report()
    board = leaderboard.rows(self.store, self.rungs)
    self.log(leaderboard.format_rungs(leaderboard.by_rung(self.store, self.rungs), self.rungs))
    self.log(leaderboard.format_table(board, self.rungs))
    if self.config.get("replay_from"):
      self.report_replay()
    return board

  def report_replay(self) -> dict[str, Any]:
    old = self.config.replay_from
    for line in replay.config_differences(old, self.config_json):
      self.log(f"replay: config differs from {old}: {line}")
    result = replay.compare(old, self.store)
    self.store.add_artifact(None, "replay", json.dumps(result, sort_keys=True))
    if result["diverged"]:
      self.log(f"replay: DIVERGED from {old} at {result['first_divergence']}")
    else:
      self.log(f"replay: identical to {old} ({result['designs']} designs, same metrics)")
    return result


def run(config: ml_collections.ConfigDict, workdir: str, log: Log = _print) -> list[dict[str, Any]]:
  """Validate the config (before anything is written), hold the workdir's controller lock, run."""
  validate.check_config(config)
  with runlock.hold(workdir, "controller", log):
    evo = Evolution(config, workdir, log)
    try:
      integrity.check_workdir(evo.store, workdir)  # history the store lost: stop, don't redo it
      return evo.run()
    finally:
      evo.store.close()
