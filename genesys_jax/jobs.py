"""Verification jobs: how a verifier worker trains one claimed (design, rung) job and records it.

A job is trained by the loop's own `Evolution.verify` (sizing, training, the design-failure rules),
with the store it records into replaced by a `JobRecorder`: the verification and the design's
status land through `Store.complete`, in one transaction with the job's `done` mark, and only if
this worker still holds the job. While it trains, a heartbeat thread (its own store connection)
renews the lease every `jobs.heartbeat_s`; a worker that finds its lease taken over stops at once
(exit 3), since another worker now trains the same job into the same checkpoint folder. A job
claimed for more than `jobs.max_attempts` times means that many attempts were lost to
infrastructure (a worker died, its host went away, a crash not caused by the design): it is
recorded as a failed verification with an `InfrastructureError` instead of being retried forever.

Checker jobs (rung `CHECK_JOB`, with external workers and `jobs.check_in_workers`): the worker runs
the check the controller would have run in-process (`check_design`: the checker for built-in
trees, the sandbox for code units) and records its report and functional fingerprint
(`Store.complete_check`); the controller applies them at its barrier, in proposal order
(`controller.settle_checks`). The checks that depend on the device (the per-device batch, the
memory limit) see the worker's devices, those the design trains on; on the controller's devices
the report is the one the in-process loop gives. A worker that dies while checking loses its lease
like one that dies while training; a checker job that lost `jobs.max_attempts` attempts is
recorded as a report failing the check `infrastructure` (the in-process loop's equivalent is
check_guard's note, which is per process and workdir, so workers do not use it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
from typing import Any, Callable

import jax
import ml_collections

from evolution import store_url
from evolution.store import CHECK_JOB, Store
from gab import checker
from gab.tree import design_from_json
from genesys_jax import code_units

Log = Callable[[str], None]
LEASE_LOST_EXIT = 3


class LeaseLost(RuntimeError):
  """This worker no longer holds the job it was recording."""


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      in_process=True,   # the controller trains its own jobs (one-process mode); False: workers do
      generation=1,      # proposals per generation: their rung-0 jobs run in parallel, then a barrier
      lease_s=300.0,     # a claimed job returns to the queue this long after its last heartbeat
      heartbeat_s=10.0,
      max_attempts=2,    # attempts lost to infrastructure before a job is recorded as failed
      poll_s=0.5,        # how often an idle worker or a waiting controller looks at the queue
      check_in_workers=True))  # with external workers, GP proposals are checked by them too


def jobs_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.jobs`, or the defaults for configs written before it existed."""
  out = default_config()
  if "jobs" in config:
    out.update(config.jobs.to_dict())
  return out


def checks_in_workers(config: ml_collections.ConfigDict) -> bool:
  """Whether the loop hands the checks of GP proposals to verifier workers as jobs."""
  cfg = jobs_config(config)
  return not cfg.in_process and bool(cfg.check_in_workers)


def store_url_of(config: ml_collections.ConfigDict) -> str:
  return config.store.url if "store" in config else ""


class JobRecorder:
  """The store as `Evolution.verify` sees it while a worker trains a claimed job."""

  def __init__(self, store: Store, worker_id: str, job: tuple[str, str], writes: bool = True):
    self.store, self.worker_id, self.job, self.writes = store, worker_id, job, writes
    self._result: dict[str, Any] | None = None
    self.recorded = False

  def __getattr__(self, name):
    return getattr(self.store, name)

  @contextlib.contextmanager
  def transaction(self):
    if not self.writes:
      yield self
      return
    with self.store.transaction():
      self._result = {}
      try:
        yield self
      finally:
        result, self._result = self._result, None
      if "metrics" in result:
        self._complete(result["metrics"], result.get("status"))

  def add_verification(self, design_id: str, rung: str, metrics: dict[str, Any]) -> None:
    if (design_id, rung) != self.job:
      raise ValueError(f"worker {self.worker_id} holds {self.job}, not ({design_id}, {rung})")
    if self._result is None:  # outside a transaction
      if self.writes:
        self._complete(metrics, None)
    else:
      self._result["metrics"] = metrics

  def set_status(self, design_id: str, status: str) -> None:
    if self._result is not None and design_id == self.job[0] and "metrics" in self._result:
      self._result["status"] = status
    elif self.writes:
      self.store.set_status(design_id, status)

  def _complete(self, metrics: dict[str, Any], status: str | None) -> None:
    if not self.store.complete(*self.job, self.worker_id, metrics, status=status):
      raise LeaseLost(f"worker {self.worker_id} lost its lease on {self.job} before recording it")
    self.recorded = True


class Heartbeat:
  """Renews a held job's lease from a thread with its own store connection."""

  def __init__(self, url: str, workdir: str, worker_id: str, job: tuple[str, str], cfg, log: Log,
               on_lost: Callable[[], None] | None = None):
    self.url, self.workdir, self.worker_id, self.job, self.cfg, self.log = url, workdir, worker_id, job, cfg, log
    self.on_lost = on_lost or (lambda: os._exit(LEASE_LOST_EXIT))  # pylint: disable=protected-access
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name=f"heartbeat-{worker_id}", daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  def _run(self):
    store = store_url.open_store(self.url, self.workdir)
    try:
      while not self._stop.wait(self.cfg.heartbeat_s):
        if not store.heartbeat(self.worker_id, *self.job, self.cfg.lease_s):
          if _done_by(store, self.worker_id, self.job):
            return  # recorded by this worker a moment ago: nothing is left to hold
          self.log(f"worker {self.worker_id}: lease on {self.job[0]}@{self.job[1]} was taken over; "
                   f"stopping so that only one worker trains it")
          self.on_lost()
          return
    finally:
      store.close()


def _done_by(store: Store, worker_id: str, job: tuple[str, str]) -> bool:
  """Whether `worker_id` itself recorded `job` (its lease ends then, and that is no loss)."""
  return any((j["design_id"], j["rung"]) == tuple(job) and j["worker_id"] == worker_id
             for j in store.jobs("done"))


def make_verifier(config: ml_collections.ConfigDict, workdir: str, store: Store, log: Log):
  """An `Evolution` that only verifies: the loop's attributes `verify` reads, none of the
  controller's side effects (no config.json, no run lock, no store of its own)."""
  from genesys_jax import loop, resolve  # pylint: disable=g-import-not-at-top  (loop imports this module)
  evo = loop.Evolution.__new__(loop.Evolution)
  evo.config, evo.workdir, evo.log = resolve.resolve(config), workdir, log  # (idempotent)
  evo.rungs = list(config.ladder.rungs)
  evo.store, evo.key, evo._data = store, jax.random.key(config.seed), None  # pylint: disable=protected-access
  evo.verifier_only = True  # the controller, not a worker, refreshes the report
  return evo


def attempts_of(store: Store, job: tuple[str, str]) -> int:
  for j in store.jobs("claimed"):
    if (j["design_id"], j["rung"]) == job:
      return j["attempts"]
  return 0


def infrastructure_failure(attempts: int) -> dict[str, Any]:
  return {"val_bpb": None, "params": None, "tokens": None,
          "error": f"InfrastructureError: {attempts - 1} attempts were lost (a worker died or crashed "
                   f"for a reason other than the design); not retried"}


def lost_check_report(attempts: int) -> checker.Report:
  return checker.Report([checker.Check(
      "infrastructure", checker.FAIL,
      f"{attempts - 1} attempts to check this design were lost (the worker checking it died: a crash "
      f"inside XLA or the runtime, out of memory, or its host went away); not tried again",
      "make the design smaller or simpler (fewer units, shorter chunks); if it looks right, "
      "this is an XLA bug worth reporting with the design file")], {})


def settle_lost_job(verifier, store: Store, worker_id: str, job: tuple[str, str], log: Log) -> bool:
  """Record a just-claimed job that already lost `jobs.max_attempts` attempts as an infrastructure
  failure (True), instead of running it again (False: run it)."""
  attempts = attempts_of(store, job)
  if attempts <= jobs_config(verifier.config).max_attempts:
    return False
  log(f"worker {worker_id}: {job[0]}@{job[1]} lost {attempts - 1} attempts; recording it as failed")
  if job[1] == CHECK_JOB:
    result = {"report": lost_check_report(attempts).to_dict(), "fingerprint": None}
    if not store.complete_check(job[0], worker_id, result):
      raise LeaseLost(f"worker {worker_id} lost its lease on {job}")
    return True
  status = "failed" if job[1] == verifier.rungs[0] else None
  if not store.complete(*job, worker_id, infrastructure_failure(attempts), status=status):
    raise LeaseLost(f"worker {worker_id} lost its lease on {job}")
  return True


def check_design(verifier, design: dict[str, Any]) -> dict[str, Any]:
  """{"report", "fingerprint"} of a stored design: the check `Evolution.check` runs in-process (the
  sizing is against the lowest rung), and the functional fingerprint of a design that passed
  (`code_units.check_tree`; the workers leave out `check_guard`, which guards the controller)."""
  tree, _ = design_from_json(design["tree"])  # a /2 design's code units are declared, not run
  report, fingerprint = code_units.check_tree(tree, verifier.checker_config(),
                                              verifier.rung(verifier.rungs[0]))
  return {"report": report.to_dict(), "fingerprint": fingerprint}


def _run_check_job(verifier, store: Store, url: str, worker_id: str, job: tuple[str, str], log: Log,
                   on_lost: Callable[[], None] | None) -> None:
  beat = Heartbeat(url, verifier.workdir, worker_id, job, jobs_config(verifier.config), log, on_lost)
  try:
    with beat:
      result = check_design(verifier, store.design(job[0]))
  except BaseException:
    store.release(worker_id, *job)
    log(f"worker {worker_id}: released {job[0]}@{job[1]} after an error:\n{traceback.format_exc(limit=3)}")
    raise
  if not store.complete_check(job[0], worker_id, result):
    raise LeaseLost(f"worker {worker_id} lost its lease on {job} before recording it")


def run_job(verifier, store: Store, url: str, worker_id: str, job: tuple[str, str], log: Log,
            writes: bool = True, on_lost: Callable[[], None] | None = None, settle: bool = True) -> None:
  """Train (or, for a `CHECK_JOB`, check) and record one job this worker has claimed
  (`writes=False`: a multi-host worker's process > 0, which trains in step with process 0 but
  records nothing, and leaves checks to process 0). `settle=False` (the in-process worker, whose
  restarts are the user's) never gives up on a job for lost attempts."""
  cfg = jobs_config(verifier.config)
  design_id, rung = job
  if writes and settle and settle_lost_job(verifier, store, worker_id, job, log):
    return
  if rung == CHECK_JOB:
    if writes:
      _run_check_job(verifier, store, url, worker_id, job, log, on_lost)
    return
  recorder = JobRecorder(store, worker_id, job, writes)
  real_store, verifier.store = verifier.store, recorder
  beat = Heartbeat(url, verifier.workdir, worker_id, job, cfg, log, on_lost) if writes else contextlib.nullcontext()
  try:
    with beat:
      verifier.verify(store.design(design_id), rung)
  except BaseException:
    if writes and not recorder.recorded:
      store.release(worker_id, design_id, rung)
      log(f"worker {worker_id}: released {design_id}@{rung} after an error:\n{traceback.format_exc(limit=3)}")
    raise
  finally:
    verifier.store = real_store
  if writes and not recorder.recorded:
    raise RuntimeError(f"verifying {design_id}@{rung} recorded no result")
