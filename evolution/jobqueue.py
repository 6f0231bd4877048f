"""The store's leased job queue: (design, rung) verification jobs claimed by workers.

A job whose rung is `CHECK_JOB` (the reserved rung name "check") is a checker job: a worker runs
the symbolic checker on the design and records the report and fingerprint as an artifact of kind
"check" (`complete_check`), which the controller applies at its next barrier.

A mixin of `evolution.store.Store` (and so of the PostgreSQL store): every method runs in the
store's transactions and writes its events. A claim takes the oldest pending job, first returning
expired leases to pending; `_ROW_LOCK` is what a backend appends to the claim's SELECTs to lock the
rows it takes (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite serialises writers itself).
"""

from __future__ import annotations

import json
from typing import Any

CHECK_JOB = "check"  # the rung name of checker jobs (a reserved name: no ladder rung may take it)


class JobQueue:
  """enqueue / claim / heartbeat / release / complete / jobs over the `jobs` table."""

  _ROW_LOCK = ""

  def enqueue(self, design_id: str, rung: str) -> bool:
    """Queue a verification job; False if that (design, rung) was ever queued."""
    with self.transaction():
      cur = self._db.execute("INSERT OR IGNORE INTO jobs (design_id, rung, state) VALUES (?, ?, 'pending')",
                             (design_id, rung))
      if cur.rowcount != 1:
        return False
      self._log("job_enqueued", {"design_id": design_id, "rung": rung})
    return True

  def claim(self, worker_id: str, lease_s: float) -> tuple[str, str] | None:
    """Atomically take the oldest pending job (expired leases first return to pending), or None."""
    with self.transaction():
      now = self._clock()
      expired = self._db.execute("SELECT id, design_id, rung, worker_id, attempts FROM jobs "
                                 "WHERE state = 'claimed' AND lease_until <= ? ORDER BY id"
                                 + self._ROW_LOCK, (now,)).fetchall()
      for job in expired:
        self._db.execute("UPDATE jobs SET state = 'pending', worker_id = NULL, lease_until = NULL "
                         "WHERE id = ?", (job["id"],))
        self._log("job_expired", {"design_id": job["design_id"], "rung": job["rung"],
                                  "worker_id": job["worker_id"], "attempt": job["attempts"]})
      job = self._db.execute("SELECT id, design_id, rung, attempts FROM jobs WHERE state = 'pending' "
                             "ORDER BY id LIMIT 1" + self._ROW_LOCK).fetchone()
      if job is None:
        return None
      self._db.execute("UPDATE jobs SET state = 'claimed', worker_id = ?, lease_until = ?, "
                       "attempts = attempts + 1 WHERE id = ?", (worker_id, now + lease_s, job["id"]))
      self._log("job_claimed", {"design_id": job["design_id"], "rung": job["rung"], "worker_id": worker_id,
                                "lease_s": lease_s, "attempt": job["attempts"] + 1})
    return job["design_id"], job["rung"]

  def heartbeat(self, worker_id: str, design_id: str, rung: str, lease_s: float) -> bool:
    """Extend a held lease to now + lease_s; False if the worker no longer holds the job."""
    cur = self._db.execute("UPDATE jobs SET lease_until = ? WHERE design_id = ? AND rung = ? "
                           "AND state = 'claimed' AND worker_id = ?",
                           (self._clock() + lease_s, design_id, rung, worker_id))
    return cur.rowcount == 1

  def release(self, worker_id: str, design_id: str, rung: str) -> bool:
    """Hand a held job back to the queue (e.g. on shutdown); False if not held."""
    with self.transaction():
      cur = self._db.execute("UPDATE jobs SET state = 'pending', worker_id = NULL, lease_until = NULL "
                             "WHERE design_id = ? AND rung = ? AND state = 'claimed' AND worker_id = ?",
                             (design_id, rung, worker_id))
      if cur.rowcount != 1:
        return False
      self._log("job_released", {"design_id": design_id, "rung": rung, "worker_id": worker_id})
    return True

  def complete(self, design_id: str, rung: str, worker_id: str, metrics: dict[str, Any],
               status: str | None = None) -> bool:
    """Record a held job's verification (and optionally the design's status) and mark it done.

    False, with no change, if the worker no longer holds the job (its lease expired and was
    taken over, or it was never claimed by this worker).
    """
    with self.transaction():
      if self._db.execute("SELECT 1 FROM jobs WHERE design_id = ? AND rung = ? AND state = 'claimed' "
                          "AND worker_id = ?", (design_id, rung, worker_id)).fetchone() is None:
        return False
      self.add_verification(design_id, rung, metrics)
      self._db.execute("UPDATE jobs SET state = 'done', lease_until = NULL WHERE design_id = ? AND rung = ?",
                       (design_id, rung))
      if status is not None:
        self.set_status(design_id, status)
      self._log("job_completed", {"design_id": design_id, "rung": rung, "worker_id": worker_id})
    return True

  def complete_check(self, design_id: str, worker_id: str, result: dict[str, Any]) -> bool:
    """Record a held checker job's result ({"report", "fingerprint"}) as the design's "check"
    artifact and mark the job done; False, with no change, if the worker no longer holds it."""
    with self.transaction():
      if self._db.execute("SELECT 1 FROM jobs WHERE design_id = ? AND rung = ? AND state = 'claimed' "
                          "AND worker_id = ?", (design_id, CHECK_JOB, worker_id)).fetchone() is None:
        return False
      self.add_artifact(design_id, "check", json.dumps(result, sort_keys=True))
      self._db.execute("UPDATE jobs SET state = 'done', lease_until = NULL WHERE design_id = ? AND rung = ?",
                       (design_id, CHECK_JOB))
      self._log("job_completed", {"design_id": design_id, "rung": CHECK_JOB, "worker_id": worker_id})
    return True

  def check_result(self, design_id: str) -> dict[str, Any] | None:
    """The recorded result of a design's checker job, or None while it is open."""
    found = self.artifacts(design_id=design_id, kind="check")
    return json.loads(found[-1]["content"]) if found else None

  def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
    """Jobs in queue order, optionally only those in `state` (pending, claimed, done)."""
    sql = "SELECT design_id, rung, state, worker_id, lease_until, attempts FROM jobs"
    rows = self._db.execute(sql + (" WHERE state = ?" if state else "") + " ORDER BY id",
                            (state,) if state else ())
    return [dict(r) for r in rows]
