"""The evolution loop, run by a controller: propose -> check -> record -> verify on the ladder.

Each step is a stage that returns a record (genesys_jax/propose.py, check.py, verify.py), and
genesys_jax/record.py is the one place records are written, to the store and to the run state
(genesys_jax/state.py) together. The controller proposes a generation of `jobs.generation`
children, then verifies at a barrier: every valid design's job at the lowest rung, the seeds'
baseline jobs on every rung, then each promotion (one at a time: its pick depends on the results
before it), as (design, rung) jobs of the store's queue, trained here (`jobs.in_process`, in job-id
order) or by verifier workers (`python -m genesys_jax.worker`). With workers (and
`jobs.check_in_workers`) the checks of GP proposals are jobs too, judged at the barrier in proposal
order (`settle_checks`). Results are read only at barriers, keyed by (design, rung), so nothing the
controller does next depends on which worker finished first.

Every random choice comes from the run's named streams (evolution/streams.py), and the store
commits one transaction per record, so a run restarted on the same workdir (after any crash)
continues exactly where it stopped, and the same config and seed give the same designs and metrics,
in process or with any number of workers (`replay_from` checks it). Before it writes anything, a
run checks what it needs (genesys_jax/preflight.py: a resume's config against the recorded one
included); the controller names its phase for the one line an interrupt prints
(genesys_jax/interrupt.py), and ends with the overview table, the best design per rung and the
report's path.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable

import ml_collections

from evolution import integrity, selection, store_url, streams
from evolution.designers import config as designer_config
from evolution.store import CHECK_JOB
from gab import atomic
from genesys_jax import (branch, check, check_guard, code_units, designers, interrupt, jobs, ladder,
                         leaderboard, preflight, propose, record, replay, resolve, resume, runlock,
                         validate)
from genesys_jax import state as state_lib
from genesys_jax.report import site as report_site

Log = Callable[[str], None]
IN_PROCESS_WORKER = "in-process"


def _print(line: str) -> None:
  print(line, flush=True)


def config_json(config: ml_collections.ConfigDict) -> str:
  """The resolved config as the run keeps it (WORKDIR/config.json)."""
  return config.to_json_best_effort(sort_keys=True, indent=1)


class Controller:
  """One run of the loop over a workdir: its store, its state and the stages in order."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Log = _print,
               verifier: jobs.Verifier | None = None):
    config = resolve.resolve(config)  # rungs' seq_len, the checker's vocab_size: once, for the run
    self.config, self.workdir, self.log = config, workdir, log
    self.rungs = list(config.ladder.rungs)
    api_key = designer_config.api_key(config)  # an LLM run without a key fails here, before any write
    os.makedirs(workdir, exist_ok=True)
    self.config_json = config_json(config)
    atomic.write(os.path.join(workdir, resume.CONFIG_FILE), self.config_json)
    self.store = store_url.open_store(config.store.url, workdir)  # SQLite in the workdir, or PostgreSQL
    try:
      code_units.declare_stored(self.store)  # declared only: no unit code runs in this process
      record.code_units(self.store, code_units.declare_files(config.units.files), None)
      self.state, unindexed = state_lib.load(config, self.store)
      record.index(self.store, unindexed)
      self.designers = (designers.LLMDesigners(config, self.store, api_key)
                        if config.designer.kind != "gp" else None)
    except BaseException:
      self.store.close()
      raise
    self.verifier = verifier or jobs.Verifier(config, workdir, log)  # the in-process worker's (and the corpus)
    self.worker_id = f"{IN_PROCESS_WORKER}@{socket.gethostname()}:{os.path.abspath(workdir)}"
    # For benchmarks (genesys_jax/cli/bench_workers.py): seconds spent waiting for verifier workers,
    # and (perf_counter, waited_s) when the first proposal of this process started.
    self.waited_s = 0.0
    self.proposing_since: tuple[float, float] | None = None

  def _guard(self, tree, run):
    return check_guard.guarded(self.workdir, tree, run, self.log)

  # -- the run ---------------------------------------------------------------------------------
  def run(self) -> list[dict[str, Any]]:
    n = self.config.evolution.n_proposals
    done = self.state.proposals_done
    if done:
      self.log(f"resuming {self.workdir}: {done}/{n} proposals already made")
    self.start()
    self.verifier.corpus()  # (already loaded when run() made the verifier, before any write)
    self.add_seeds()
    if self.at_barrier(done):  # not in the middle of a generation
      self.verify_pending()
    for index in range(done, n):
      try:
        self.step(index, n)
      except designer_config.BudgetStop as e:
        self.log(f"{e}: stopped cleanly before proposal {index + 1}; raise designer.max_usd and run "
                 f"again on this workdir to resume")
        self.verify_pending()
        break
      if self.at_barrier(index + 1):
        self.verify_pending()
    if not self.config.jobs.in_process:
      record.run_finished(self.store)
    self.refresh_report()
    if self.config.replay_from:
      self.report_replay()
    self.summarise()
    return leaderboard.rows(self.store, self.rungs)

  def summarise(self) -> None:
    """The run's end: the overview table first, each rung's board, and last, the best discovered
    design per rung and where the report is."""
    interrupt.at("the summary (the run is complete)")
    table = leaderboard.overview(self.store, self.rungs)
    self.log(leaderboard.format_overview(table, self.rungs))
    self.log(leaderboard.format_rungs(leaderboard.by_rung(self.store, self.rungs), self.rungs))
    for line in leaderboard.best_lines(table, self.rungs):
      self.log(line)
    index = os.path.join(os.path.abspath(self.workdir), "report", "index.html")
    self.log(f"report: {index}" if self.config.report else
             f"report: not written (report=False); python -m genesys_jax.report --workdir={self.workdir}")

  def start(self) -> None:
    """Hand back the jobs a killed in-process worker of this workdir still holds; for verifier
    workers, publish the resolved config and mark the run unfinished."""
    for job in self.store.jobs("claimed"):
      if job["worker_id"] == self.worker_id:
        self.store.release(job["worker_id"], job["design_id"], job["rung"])
    if not self.config.jobs.in_process:
      record.run_open(self.store, self.config_json)

  def at_barrier(self, proposals_done: int) -> bool:
    """Whether the loop verifies after `proposals_done` proposals (a generation boundary or the end)."""
    return (proposals_done % self.config.jobs.generation == 0
            or proposals_done >= self.config.evolution.n_proposals)

  # -- proposing -------------------------------------------------------------------------------
  def _rung0(self):
    return self.config.rungs[self.rungs[0]]

  def add_seeds(self) -> None:
    for name in self.config.seeds:
      tree, name = code_units.seed(name)  # a built-in seed, or a design file (maybe with code units)
      if self.store.has_design(tree.content_hash()):
        continue
      interrupt.at(f"the check of seed {name}")
      report, fingerprint = check.examine(tree, self.config.checker, self._rung0(), self._guard)
      verdict = check.Verdict("valid" if report.passed else "rejected", report.to_dict(), fingerprint)
      if record.seed(self.store, self.state, tree, name, verdict):  # (else: recorded meanwhile)
        self.log(f"seed {name} {tree.content_hash()}: {report.summary()}")

  def step(self, index: int, n: int) -> None:
    """Propose, check and record proposal `index` (with checks in verifier workers: record it as
    `checking` with its checker job; `settle_checks` gives the verdict at the barrier)."""
    if self.proposing_since is None:
      self.proposing_since = (time.perf_counter(), self.waited_s)
    interrupt.at(f"proposal {index + 1}/{n}")
    name = propose.designer(self.state, index)
    if name != "gp":
      self.settle_checks()  # its retries and novelty test see every earlier verdict
      p = self.designers.propose(self.state, index, name)
      record.proposal(self.store, self.state, p, p.verdict)
      self.log(designers.line(p, p.tree.content_hash() if p.tree is not None else None, n))
      return
    p = propose.propose(self.state, index)
    if jobs.checks_in_workers(self.config):
      record.proposal(self.store, self.state, p, None)
      outcome = "queued for a verifier worker's check"
    else:
      interrupt.at(f"proposal {index + 1}/{n} (the check of {p.tree.content_hash()})")
      verdict = check.check(p.tree, self.config.checker, self._rung0(), self.state.fingerprints, self._guard)
      record.proposal(self.store, self.state, p, verdict)
      outcome = verdict.summary()
    self.log(propose.line(index, n, p.tree.content_hash(), p.mode, p.parents, p.description, outcome))

  def settle_checks(self) -> None:
    """Wait for the checker jobs of every `checking` design, then judge their results in proposal
    (creation) order, each for novelty against the designs before it only: the statuses, reports and
    fingerprints the in-process loop would have recorded, whichever worker finished first. Each
    verdict is one transaction: a controller killed midway resumes with the rest."""
    pending = [d["id"] for d in self.state.designs.values() if d["status"] == "checking"]
    if not pending:
      return
    self.await_jobs([(d, CHECK_JOB) for d in pending])  # (queued with each proposal)
    for design_id in pending:
      design, result = self.store.design(design_id), self.store.check_result(design_id)
      report = check.report_of(result["report"])
      verdict = check.judge(design_id, report, result["fingerprint"] if report.passed else None,
                            self.state.fingerprints)
      record.verdict(self.store, self.state, design_id, verdict)
      self.log(propose.line(design["report"]["proposal"], self.config.evolution.n_proposals, design_id,
                            design["operator"], design["parents"], design["description"],
                            verdict.summary()))

  # -- verifying -------------------------------------------------------------------------------
  def verify_pending(self) -> None:
    """Apply the checks workers made, verify every valid design at the lowest rung (one barrier),
    the seeds' baselines, then fill the ladder's open slots above it one promotion at a time."""
    self.settle_checks()
    self.await_jobs([(d["id"], self.rungs[0]) for d in self.state.designs.values() if d["status"] == "valid"])
    self.await_jobs(self.baseline_jobs())
    while (job := self.next_promotion()) is not None:
      self.log(f"  promoting {job[0]} to rung {job[1]}")
      self.await_jobs([job])
    self.refresh_report()

  def baseline_jobs(self) -> list[tuple[str, str]]:
    """(seed, rung) for every seed that trained at the lowest rung and lacks a higher rung: the
    seeds are baselines on every rung, outside the promotion budget."""
    return [(d["id"], r) for d in self.state.designs.values() if d["is_seed"] and d["status"] == "verified"
            for r in self.rungs[1:] if r not in d["metrics"]]

  def next_promotion(self) -> tuple[str, str] | None:
    """The (design, rung) to train next above the lowest rung, if the ladder has an open slot and a
    candidate for it (genesys_jax/ladder.py)."""
    designs = list(self.state.designs.values())
    found = ladder.promotion(designs, self.rungs, self.config.ladder, self.config.evolution.n_proposals,
                             self.state.proposals_done, self.config.evolution.zeroshot_weight)
    if found is None:
      return None
    i, candidates = found
    results = sum(len(d["metrics"]) for d in designs if not d["is_seed"])  # (of the ladder's rungs)
    key = streams.of_run(self.state.key, "promotion", results)
    return selection.pick_promotion(key, candidates, self.config.ladder.exploit_prob)["id"], self.rungs[i]

  def await_jobs(self, wanted: list[tuple[str, str]]) -> None:
    """Enqueue `wanted` (in this order), return once every one of them is done, and learn their results."""
    if not wanted:
      return
    record.enqueue(self.store, wanted)
    if self.config.jobs.in_process:
      ran = self._drain_in_process(set(wanted))
    else:
      ran = self._wait_for_workers(set(wanted))
    record.learn(self.state, self.store, [j for j in dict.fromkeys(wanted + ran) if j[1] != CHECK_JOB])

  def _open(self, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(j["design_id"], j["rung"]) for j in self.store.jobs() if j["state"] != "done"} & wanted

  def _drain_in_process(self, wanted: set[tuple[str, str]]) -> list[tuple[str, str]]:
    ran = []
    while self._open(wanted):
      job = self.store.claim(self.worker_id, self.config.jobs.lease_s)
      if job is None:  # held by an outside worker that joined the run: wait for it
        time.sleep(self.config.jobs.poll_s)
        continue
      interrupt.at(f"the check of {job[0]}" if job[1] == CHECK_JOB else self._training(*job))
      jobs.run_job(self.verifier, self.store, self.config.store.url, self.worker_id, job, self.log,
                   settle=False)
      ran.append(job)
      if job[1] != CHECK_JOB:
        self.refresh_report()
    return ran

  def _training(self, design_id: str, rung: str) -> Callable[[], str]:
    """The phase of training a design at a rung, worded when an interrupt comes: where the next
    run resumes it."""
    path = os.path.join(self.workdir, "checkpoints", design_id, rung)

    def where() -> str:
      steps = [int(n) for n in os.listdir(path) if n.isdigit()] if os.path.isdir(path) else []
      resumes = f"resumes from its checkpoint at step {max(steps)}" if steps else "restarts from step 0"
      return f"the training of {design_id} at rung {rung} (it {resumes})"
    return where

  def _wait_for_workers(self, wanted: set[tuple[str, str]]) -> list[tuple[str, str]]:
    interrupt.at("the wait for verifier workers (their jobs go on)")
    left, reported = self._open(wanted), None
    t0 = time.perf_counter()
    while left:
      if len(left) != reported:
        self.log(f"  waiting for verifier workers: {len(left)} of {len(wanted)} job(s) open")
        reported = len(left)
      time.sleep(self.config.jobs.poll_s)
      left = self._open(wanted)
    self.waited_s += time.perf_counter() - t0
    self.log(f"  {len(wanted)} job(s) done")
    return []

  # -- reporting -------------------------------------------------------------------------------
  def refresh_report(self) -> None:
    """Rewrite the HTML report (file by file, atomically) so a long run can be watched."""
    if self.config.report:
      interrupt.at("the report's refresh (results so far are recorded)")
      try:
        report_site.write(self.workdir, self.store, log=self.log)
      except Exception as e:  # noqa: BLE001 - the report is for watching; it must never stop a run
        self.log(f"warning: the report could not be refreshed ({type(e).__name__}: {e})")

  def report_replay(self) -> dict[str, Any]:
    old = self.config.replay_from
    for line in replay.config_differences(old, self.config_json):
      self.log(f"replay: config differs from {old}: {line}")
    result = replay.compare(old, self.store)
    record.replay(self.store, json.dumps(result, sort_keys=True))
    if result["diverged"]:
      self.log(f"replay: DIVERGED from {old} at {result['first_divergence']}")
    else:
      self.log(f"replay: identical to {old} ({result['designs']} designs, same metrics)")
    return result


def run(config: ml_collections.ConfigDict, workdir: str, log: Log = _print) -> list[dict[str, Any]]:
  """Check everything the run needs before anything is written (the config, the API key an LLM run
  needs, the workdir, a resume's or branch's config against the recorded one, the seeds, the code
  units, the corpus: genesys_jax/preflight.py), hold the workdir's controller lock, make the branch
  if one is asked for, run."""
  interrupt.at(f"the start of {workdir}")
  validate.check_config(config)
  designer_config.api_key(config)
  config = resolve.resolve(config)
  text = config_json(config)
  verifier = jobs.Verifier(config, workdir, log)
  changed = preflight.check(config, text, workdir, verifier.corpus)
  with runlock.hold(workdir, "controller", log):
    applied = resume.applied_line(changed)
    if applied:
      log(applied)
    if config.branch_from and not os.path.exists(os.path.join(workdir, branch.STORE)):
      interrupt.at(f"the branch from {config.branch_from} (it starts over)")
      branch.make(config.branch_from, workdir, text, log)
    controller = Controller(config, workdir, log, verifier)
    try:
      integrity.check_workdir(controller.store, workdir)  # history the store lost: stop, don't redo it
      return controller.run()
    finally:
      if controller.designers is not None:
        controller.designers.close()  # stops a local LLM endpoint the run started
      controller.store.close()
