"""The controller side of verification: enqueue (design, rung) jobs, wait for them at barriers.

The loop proposes a generation of `jobs.generation` children (each from `fold_in(key, index)` and
the pool as it stood before the generation), then verifies: every valid design's job at the lowest
rung is enqueued, and the controller waits until all of them are done; then each promotion (one at
a time, as its pick depends on the results before it) is enqueued and awaited. Nothing the
controller reads next depends on which worker finished first or in what order: results are read
from the store, keyed by (design, rung), only at these barriers. So the same seed gives the same
designs and metrics with the in-process worker (`jobs.in_process`, the default: the controller
claims and trains its own jobs, in job-id order) or with any number of verifier workers
(`python -m genesys_jax.worker`), and `replay_from` holds across both.

With verifier workers (and `jobs.check_in_workers`, the default) the checks of GP proposals are
jobs too: each child is recorded as `checking` with a checker job, and at the barrier, before any
training is enqueued, the controller waits for them and applies the verdicts in proposal order
(`settle_checks`). A proposal never depends on its predecessors' verdicts within a generation (the
pool is the verified designs, the known set every design), so this too gives the same run.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from evolution import store_url
from evolution.store import CHECK_JOB, Store
from genesys_jax import jobs as jobs_lib

IN_PROCESS_WORKER = "in-process"


def open_store(config, workdir: str) -> Store:
  return store_url.open_store(jobs_lib.store_url_of(config), workdir)


def at_barrier(config, proposals_done: int) -> bool:
  """Whether the loop verifies after `proposals_done` proposals (a generation boundary or the end)."""
  generation = max(1, int(jobs_lib.jobs_config(config).generation))
  return proposals_done % generation == 0 or proposals_done >= config.evolution.n_proposals


def start(evo) -> None:
  """Before the run: hand back jobs a killed in-process worker of this workdir still holds, and,
  for external workers, publish the resolved config and mark the run unfinished."""
  store = evo.store
  for job in store.jobs("claimed"):
    if job["worker_id"] == _in_process_id(evo):
      store.release(job["worker_id"], job["design_id"], job["rung"])
  if not jobs_lib.jobs_config(evo.config).in_process:
    published = store.artifacts(kind="config")
    if not published or published[-1]["content"] != evo.config_json:
      store.add_artifact(None, "config", evo.config_json)
    if store.get_meta("run_finished"):
      store.set_meta("run_finished", False)


def finish(evo) -> None:
  if not jobs_lib.jobs_config(evo.config).in_process:
    evo.store.set_meta("run_finished", True)


def _in_process_id(evo) -> str:
  return f"{IN_PROCESS_WORKER}@{socket.gethostname()}:{os.path.abspath(evo.workdir)}"


def settle_checks(evo) -> None:
  """Wait for the checker jobs of every `checking` design, then apply their results in proposal
  (creation) order, each judged for novelty against the designs before it only: the statuses,
  reports and fingerprints the in-process loop would have recorded, whichever worker finished first.
  Each design's verdict is one transaction: a controller killed midway resumes with the rest."""
  pending = evo.store.designs("checking")
  if not pending:
    return
  await_jobs(evo, [(d["id"], CHECK_JOB) for d in pending])  # (queued with each proposal)
  for design in pending:
    evo.apply_check(design, evo.store.check_result(design["id"]))


def verify_pending(evo) -> None:
  """Apply the checks workers made, verify every valid design at the lowest rung (one barrier),
  then fill the ladder's open slots above it one promotion at a time."""
  settle_checks(evo)
  first = evo.rungs[0]
  await_jobs(evo, [(d["id"], first) for d in evo.store.designs("valid")])
  await_jobs(evo, evo.baseline_jobs())  # the seeds on every rung, outside the promotion budget
  while (job := evo.next_promotion()) is not None:
    evo.log(f"  promoting {job[0]['id']} to rung {job[1]}")
    await_jobs(evo, [(job[0]["id"], job[1])])
  evo.refresh_report()


def await_jobs(evo, wanted: list[tuple[str, str]]) -> None:
  """Enqueue `wanted` (in this order) and return once every one of them is done."""
  if not wanted:
    return
  with evo.store.transaction():
    for design_id, rung in wanted:
      evo.store.enqueue(design_id, rung)
  cfg = jobs_lib.jobs_config(evo.config)
  if cfg.in_process:
    _drain_in_process(evo, set(wanted), cfg)
  else:
    _wait_for_workers(evo, set(wanted), cfg)


def _open(store: Store, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
  return {(j["design_id"], j["rung"]) for j in store.jobs() if j["state"] != "done"} & wanted


def _drain_in_process(evo, wanted, cfg) -> None:
  worker_id = _in_process_id(evo)
  url = jobs_lib.store_url_of(evo.config)
  while _open(evo.store, wanted):
    job = evo.store.claim(worker_id, cfg.lease_s)
    if job is None:  # held by an outside worker that joined the run: wait for it
      time.sleep(cfg.poll_s)
      continue
    jobs_lib.run_job(evo, evo.store, url, worker_id, job, evo.log, settle=False)


def _wait_for_workers(evo, wanted, cfg) -> None:
  left, reported = _open(evo.store, wanted), None
  t0 = time.perf_counter()
  while left:
    if len(left) != reported:
      evo.log(f"  waiting for verifier workers: {len(left)} of {len(wanted)} job(s) open")
      reported = len(left)
    time.sleep(cfg.poll_s)
    left = _open(evo.store, wanted)
  evo.waited_s = getattr(evo, "waited_s", 0.0) + time.perf_counter() - t0  # for benchmarks
  evo.log(f"  {len(wanted)} job(s) done")


def stats(store: Store) -> dict[str, Any]:
  """Queue counts by state, for logs and launchers."""
  out: dict[str, Any] = {"pending": 0, "claimed": 0, "done": 0}
  for j in store.jobs():
    out[j["state"]] += 1
  return out
