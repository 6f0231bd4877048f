"""Verification jobs: how a worker (a verifier worker, or the controller's in-process one) runs one
claimed (design, rung) job and records it.

A job is trained by the verify stage (`genesys_jax.verify.verify`: sizing, training, the
design-failure rules), and its result recorded by `record.result`: the verification and the
design's status land through `Store.complete`, in one transaction with the job's `done` mark, and
only if this worker still holds the job. While it trains, a heartbeat thread (its own store connection)
renews the lease every `jobs.heartbeat_s`; a worker that finds its lease taken over stops at once
(exit 3), since another worker now trains the same job into the same checkpoint folder. A job
claimed for more than `jobs.max_attempts` times means that many attempts were lost to
infrastructure (a worker died, its host went away, a crash not caused by the design): it is
recorded as a failed verification with an `InfrastructureError` instead of being retried forever.

Checker jobs (rung `CHECK_JOB`, with external workers and `jobs.check_in_workers`): the worker runs
the check the controller would have run in-process (`check.examine`: the checker for built-in
trees, the sandbox for code units) and records its report and functional fingerprint
(`record.check_result`); the controller judges them at its barrier, in proposal order. The checks that depend on the device (the per-device batch, the
memory limit) see the worker's devices, those the design trains on; on the controller's devices
the report is the one the in-process loop gives. A worker that dies while checking loses its lease
like one that dies while training; a checker job that lost `jobs.max_attempts` attempts is
recorded as a report failing the check `infrastructure` (the in-process loop's equivalent is
check_guard's note, which is per process and workdir, so workers do not use it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import traceback
from typing import Callable

import ml_collections

from evolution import store_url
from evolution.store import CHECK_JOB, Store
from gab import checker, codeunits
from genesys_jax import record, verify
from genesys_jax.check import examine
from train import data as data_lib

Log = Callable[[str], None]
LEASE_LOST_EXIT = 3


class LeaseLost(RuntimeError):
  """This worker no longer holds the job it was recording."""


@dataclasses.dataclass
class Verifier:
  """What running jobs needs: the run's resolved config, its workdir (checkpoints, TensorBoard), a
  log, and the corpus, loaded on the first job that trains in this process."""
  config: ml_collections.ConfigDict
  workdir: str
  log: Log
  _corpus: data_lib.Corpus | None = None

  @property
  def rungs(self) -> list[str]:
    return list(self.config.ladder.rungs)

  def corpus(self) -> data_lib.Corpus:
    if self._corpus is None:
      self._corpus = data_lib.load_corpus(self.config.data)
    return self._corpus


def checks_in_workers(config: ml_collections.ConfigDict) -> bool:
  """Whether the loop hands the checks of GP proposals to verifier workers as jobs."""
  return not config.jobs.in_process and config.jobs.check_in_workers


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


def attempts_of(store: Store, job: tuple[str, str]) -> int:
  for j in store.jobs("claimed"):
    if (j["design_id"], j["rung"]) == job:
      return j["attempts"]
  return 0


def lost_check_report(attempts: int) -> checker.Report:
  return checker.Report([checker.Check(
      "infrastructure", checker.FAIL,
      f"{attempts - 1} attempts to check this design were lost (the worker checking it died: a crash "
      f"inside XLA or the runtime, out of memory, or its host went away); not tried again",
      "make the design smaller or simpler (fewer units, shorter chunks); if it looks right, "
      "this is an XLA bug worth reporting with the design file")], {})


def _recorded(ok: bool, worker_id: str, job: tuple[str, str]) -> None:
  if not ok:
    raise LeaseLost(f"worker {worker_id} lost its lease on {job} before recording it")


def settle_lost_job(verifier: Verifier, store: Store, worker_id: str, job: tuple[str, str], log: Log) -> bool:
  """Record a just-claimed job that already lost `jobs.max_attempts` attempts as an infrastructure
  failure (True), instead of running it again (False: run it)."""
  attempts = attempts_of(store, job)
  if attempts <= verifier.config.jobs.max_attempts:
    return False
  log(f"worker {worker_id}: {job[0]}@{job[1]} lost {attempts - 1} attempts; recording it as failed")
  if job[1] == CHECK_JOB:
    _recorded(record.check_result(store, worker_id, job[0], lost_check_report(attempts), None), worker_id, job)
  else:
    failure = verify.Failure(*job, f"InfrastructureError: {attempts - 1} attempts were lost (a worker "
                             f"died or crashed for a reason other than the design); not retried")
    _recorded(record.result(store, worker_id, failure, verifier.rungs[0]), worker_id, job)
  return True


def run_job(verifier: Verifier, store: Store, url: str, worker_id: str, job: tuple[str, str], log: Log,
            writes: bool = True, on_lost: Callable[[], None] | None = None, settle: bool = True) -> None:
  """Train (or, for a `CHECK_JOB`, check) and record one job this worker has claimed
  (`writes=False`: a multi-host worker's process > 0, which trains in step with process 0 but
  records nothing, and leaves checks to process 0). `settle=False` (the in-process worker, whose
  restarts are the user's) never gives up on a job for lost attempts."""
  design_id, rung = job
  if writes and settle and settle_lost_job(verifier, store, worker_id, job, log):
    return
  if rung == CHECK_JOB and not writes:
    return
  beat = (Heartbeat(url, verifier.workdir, worker_id, job, verifier.config.jobs, log, on_lost) if writes
          else contextlib.nullcontext())
  recorded = False
  try:
    with beat:
      design = store.design(design_id)
      if rung == CHECK_JOB:  # the sizing is against the lowest rung, as in the controller
        tree, _, _ = codeunits.read_design(design["tree"])  # its code units are declared, not run
        report, fingerprint = examine(tree, verifier.config.checker, verifier.config.rungs[verifier.rungs[0]])
      else:
        res = verify.verify(verifier.config, verifier.corpus, design, rung, verifier.workdir, log)
    if not writes:
      return
    if rung == CHECK_JOB:
      _recorded(record.check_result(store, worker_id, design_id, report, fingerprint), worker_id, job)
    else:
      _recorded(record.result(store, worker_id, res, verifier.rungs[0]), worker_id, job)
      log(verify.line(res))
    recorded = True
  except BaseException as e:
    if writes and not recorded:
      store.release(worker_id, design_id, rung)
      if isinstance(e, Exception):  # (an interrupt is reported once, by the command: interrupt.py)
        log(f"worker {worker_id}: released {design_id}@{rung} after an error:\n"
            f"{traceback.format_exc(limit=3)}")
    raise
