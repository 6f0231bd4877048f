"""The evolution store: every design, verification and job of a run, in SQLite at WORKDIR/evolution.db.

Tables (the designs and verifications columns are a contract other tools read):
  designs(id, tree, parents, operator, description, seq, status, report, canonical)
    id = the tree's content hash; tree = design JSON; parents = JSON list of ids;
    seq = creation order; status in {valid, rejected, verified, failed, leaking}, or checking
    while a verifier worker checks it (report = {"checking": true, "proposal": index} until then);
    leaking (schema 5): its trained parameters failed the post-training audit (`gab.audit`);
    canonical = the tree's canonical id (evolution.canonical: equal for trees that differ only in
    how they are written), NULL in rows stored before schema 4 until a run indexes them.
  verifications(design_id, rung, metrics)   metrics = JSON with val_bpb, params, tokens, or, for a
                                            failed run, val_bpb null and an "error" string; a
                                            leaking run's are voided: val_bpb null, the error,
                                            "leaking": true and the trained run's under "voided"; a
                                            branch drops those its config changes (event
                                            verification_dropped: genesys_jax/branch.py).
  meta(key, value)                          run-level counters (e.g. the next proposal index).
  lineage(child_id, parent_id, position)    designs.parents as rows, for graph queries.
  artifacts(created_seq, design_id, kind, content)  checker reports, resolved configs, transcripts;
                                            created_seq is the seq of the event that added it.
  events(seq, kind, payload)                append-only log; each event is written in the
                                            transaction of the change it records.
  jobs(id, design_id, rung, state, worker_id, lease_until, attempts)  the verification queue that
                                            several worker processes share; rung CHECK_JOB (the
                                            reserved name "check") is a checker job, whose result
                                            is an artifact of kind "check".
  code_units(kind, name, hash, source, declaration, design_id, seq)  every code unit of the run
                                            (kind = Name@hash8), the design that introduced it
                                            (NULL: config.units.files) and the order they came in.
Each write is one transaction, so a run killed at any moment leaves a consistent store. The schema
version is `PRAGMA user_version`; opening an older store migrates it in one transaction
(evolution/schema.py). Wall time
enters only through leases (the injected `clock`), never events, ordering or randomness.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from typing import Any, Callable, Iterable

from evolution import integrity
from evolution.integrity import StoreError  # noqa: F401 (the API: a store that cannot be used)
from evolution.jobqueue import CHECK_JOB, JobQueue  # noqa: F401 (CHECK_JOB: the API)
from evolution.schema import MIGRATIONS, SCHEMA_VERSION  # noqa: F401 (SCHEMA_VERSION: the API)

STATUSES = ("valid", "rejected", "verified", "failed", "checking", "leaking")



class Store(JobQueue):
  """A transactional view of the run's SQLite database, shareable by several processes."""

  def __init__(self, path: str, clock: Callable[[], float] = time.time):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self._clock = clock
    self._depth = 0
    self._db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    self._db.row_factory = sqlite3.Row
    try:
      if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        self._db.execute("PRAGMA journal_mode=WAL")
      self._db.execute("PRAGMA synchronous=NORMAL")
      self._db.execute("PRAGMA foreign_keys=ON")
      integrity.check_database(self._db, path)
      self._migrate()
    except sqlite3.DatabaseError as e:
      self._db.close()
      if isinstance(e, sqlite3.OperationalError):  # locked, disk full, ...: not damage
        raise
      raise integrity.damaged(path, str(e)) from None
    except BaseException:
      self._db.close()
      raise

  @classmethod
  def open(cls, workdir: str, clock: Callable[[], float] = time.time) -> "Store":
    return cls(os.path.join(workdir, "evolution.db"), clock)

  def close(self):
    self._db.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  @contextlib.contextmanager
  def transaction(self):
    """`with store.transaction():` groups writes; all land or none do. Nests (as savepoints)."""
    outer = self._depth == 0
    name = f"sp{self._depth}"
    self._db.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
    self._depth += 1
    try:
      yield self
    except BaseException:
      self._depth -= 1
      self._db.execute("ROLLBACK" if outer else f"ROLLBACK TO {name}")
      if not outer:
        self._db.execute(f"RELEASE {name}")
      raise
    self._depth -= 1
    try:
      self._db.execute("COMMIT" if outer else f"RELEASE {name}")
    except BaseException:
      if outer and self._db.in_transaction:
        self._db.execute("ROLLBACK")
      raise
    if outer:
      self._after_commit()

  def _after_commit(self) -> None:
    integrity.checkpoint(self._db)  # SQLite: committed history lives in the main file, not the WAL

  # -- schema --------------------------------------------------------------------------------
  def version(self) -> int:
    version = self._db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and self._db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'designs'").fetchone():
      return 1
    return version

  def _migrate(self) -> None:
    if self.version() == len(MIGRATIONS):
      return
    with self.transaction():
      version = self.version()
      if version == len(MIGRATIONS):
        return  # another process migrated it meanwhile: nothing to do, nothing to log
      if version > len(MIGRATIONS):
        raise StoreError(f"{self.path} has schema version {version}, newer than this code's "
                         f"{len(MIGRATIONS)}; update genesys_jax to open it")
      for steps in MIGRATIONS[version:]:
        for sql in steps:
          self._db.execute(sql)
      self._db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
      if version >= 1:
        self._log("schema_migrated", {"from": version, "to": len(MIGRATIONS)})

  # -- events --------------------------------------------------------------------------------
  def _log(self, kind: str, payload: dict[str, Any]) -> int:
    cur = self._db.execute("INSERT INTO events (kind, payload) VALUES (?, ?)",
                           (kind, json.dumps(payload, sort_keys=True)))
    return cur.lastrowid

  def events(self, since: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
    """Events with seq > `since` in order, optionally only those of `kind`."""
    sql, args = "SELECT seq, kind, payload FROM events WHERE seq > ?", [since]
    if kind is not None:
      sql, args = sql + " AND kind = ?", args + [kind]
    return [{"seq": r["seq"], "kind": r["kind"], "payload": json.loads(r["payload"])}
            for r in self._db.execute(sql + " ORDER BY seq", args)]

  # -- designs -------------------------------------------------------------------------------
  def add_design(self, design_id: str, tree_json: str, parents: Iterable[str], operator: str,
                 description: str, status: str, report: dict | None = None,
                 canonical: str | None = None) -> bool:
    """Insert a design and its lineage; False (and no change) if the id is already stored."""
    _check_status(status)
    parents = list(parents)
    with self.transaction():
      cur = self._db.execute(
          "INSERT OR IGNORE INTO designs (id, tree, parents, operator, description, seq, status, report, "
          "canonical) VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), -1) + 1 FROM designs), ?, ?, ?)",
          (design_id, tree_json, json.dumps(parents), operator, description, status,
           json.dumps(report or {}, sort_keys=True), canonical))
      if cur.rowcount != 1:
        return False
      self._db.executemany("INSERT INTO lineage (child_id, parent_id, position) VALUES (?, ?, ?)",
                           [(design_id, p, i) for i, p in enumerate(parents)])
      seq = self._db.execute("SELECT seq FROM designs WHERE id = ?", (design_id,)).fetchone()[0]
      self._log("design_added", {"id": design_id, "seq": seq, "parents": parents,
                                 "operator": operator, "status": status})
    return True

  def has_design(self, design_id: str) -> bool:
    return self._db.execute("SELECT 1 FROM designs WHERE id = ?", (design_id,)).fetchone() is not None

  def set_status(self, design_id: str, status: str, report: dict | None = None) -> None:
    """Change a design's status (and, given `report`, its checker report: a checked design)."""
    _check_status(status)
    with self.transaction():
      row = self._db.execute("SELECT status FROM designs WHERE id = ?", (design_id,)).fetchone()
      if row is not None and report is not None:
        self._db.execute("UPDATE designs SET report = ? WHERE id = ?",
                         (json.dumps(report, sort_keys=True), design_id))
      if row is None or row["status"] == status:
        return
      self._db.execute("UPDATE designs SET status = ? WHERE id = ?", (status, design_id))
      self._log("status_set", {"id": design_id, "status": status, "previous": row["status"]})

  def set_canonical(self, ids: dict[str, str]) -> None:
    """Index rows stored without a canonical id (before schema 4): {design id: canonical id}."""
    if not ids:
      return
    with self.transaction():
      self._db.executemany("UPDATE designs SET canonical = ? WHERE id = ? AND canonical IS NULL",
                           [(c, d) for d, c in ids.items()])
      self._log("designs_indexed", {"designs": len(ids)})

  def design(self, design_id: str) -> dict[str, Any]:
    row = self._db.execute("SELECT * FROM designs WHERE id = ?", (design_id,)).fetchone()
    if row is None:
      raise KeyError(f"no design {design_id} in {self.path}")
    return _design_row(row)

  def designs(self, status: str | None = None) -> list[dict[str, Any]]:
    """Designs in creation order, optionally only those with `status`."""
    if status is None:
      rows = self._db.execute("SELECT * FROM designs ORDER BY seq").fetchall()
    else:
      rows = self._db.execute("SELECT * FROM designs WHERE status = ? ORDER BY seq", (status,)).fetchall()
    return [_design_row(r) for r in rows]

  # -- lineage -------------------------------------------------------------------------------
  def lineage(self) -> list[dict[str, Any]]:
    """Every (child, parent) edge, in the child's creation order then parent position."""
    rows = self._db.execute("SELECT l.child_id, l.parent_id, l.position FROM lineage l JOIN designs d "
                            "ON d.id = l.child_id ORDER BY d.seq, l.position")
    return [dict(r) for r in rows]

  def children(self, design_id: str) -> list[str]:
    rows = self._db.execute("SELECT DISTINCT d.id FROM lineage l JOIN designs d ON d.id = l.child_id "
                            "WHERE l.parent_id = ? ORDER BY d.seq", (design_id,))
    return [r[0] for r in rows]

  def ancestors(self, design_id: str) -> list[str]:
    """All stored ancestors of a design, oldest first."""
    rows = self._db.execute(
        "WITH RECURSIVE up(id) AS (SELECT parent_id FROM lineage WHERE child_id = ? "
        "UNION SELECT l.parent_id FROM lineage l JOIN up ON l.child_id = up.id) "
        "SELECT d.id FROM up JOIN designs d ON d.id = up.id ORDER BY d.seq", (design_id,))
    return [r[0] for r in rows]

  # -- verifications -------------------------------------------------------------------------
  def add_verification(self, design_id: str, rung: str, metrics: dict[str, Any]) -> None:
    """Record (or replace) a design's result at a rung; failures carry val_bpb None and "error"."""
    _check_metrics(metrics)
    with self.transaction():
      replaced = self.has_verification(design_id, rung)
      self._db.execute("INSERT OR REPLACE INTO verifications (design_id, rung, metrics) VALUES (?, ?, ?)",
                       (design_id, rung, json.dumps(metrics, sort_keys=True)))
      payload = {"design_id": design_id, "rung": rung, "val_bpb": metrics["val_bpb"], "replaced": replaced}
      if "error" in metrics:
        payload["error"] = metrics["error"]
      self._log("verification_added", payload)

  def drop_verification(self, design_id: str, rung: str) -> None:
    """Forget a design's result at a rung and its job (done or not), so that the rung trains it
    again if it is asked to (a branch whose config changes what that result means:
    genesys_jax/branch.py)."""
    with self.transaction():
      self._db.execute("DELETE FROM verifications WHERE design_id = ? AND rung = ?", (design_id, rung))
      self._db.execute("DELETE FROM jobs WHERE design_id = ? AND rung = ?", (design_id, rung))
      self._log("verification_dropped", {"design_id": design_id, "rung": rung})

  def verifications(self, design_id: str | None = None) -> list[dict[str, Any]]:
    sql = ("SELECT v.design_id, v.rung, v.metrics FROM verifications v JOIN designs d "
           "ON d.id = v.design_id")
    args: tuple = ()
    if design_id is not None:
      sql += " WHERE v.design_id = ?"
      args = (design_id,)
    rows = self._db.execute(sql + " ORDER BY d.seq, v.rung", args).fetchall()
    return [{"design_id": r["design_id"], "rung": r["rung"], "metrics": json.loads(r["metrics"])}
            for r in rows]

  def verification(self, design_id: str, rung: str) -> dict[str, Any] | None:
    """The metrics of a design's verification at a rung, or None."""
    row = self._db.execute("SELECT metrics FROM verifications WHERE design_id = ? AND rung = ?",
                           (design_id, rung)).fetchone()
    return None if row is None else json.loads(row["metrics"])

  def metrics_by_design(self, rungs: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """{design id: {rung: metrics}} of every verification, designs in creation order; rungs in the
    ladder's order (and only those) when `rungs` is given, else in name order."""
    out: dict[str, dict[str, Any]] = {}
    for v in self.verifications():
      out.setdefault(v["design_id"], {})[v["rung"]] = v["metrics"]
    if rungs is not None:
      rungs = list(rungs)
      out = {d: {r: m[r] for r in rungs if r in m} for d, m in out.items()}
    return out

  def has_verification(self, design_id: str, rung: str) -> bool:
    return self._db.execute("SELECT 1 FROM verifications WHERE design_id = ? AND rung = ?",
                            (design_id, rung)).fetchone() is not None

  # -- artifacts -----------------------------------------------------------------------------
  def add_artifact(self, design_id: str | None, kind: str, content: str) -> int:
    """Keep a text artifact (JSON-encode structured ones); None design_id = run-level. Returns its seq."""
    if not isinstance(content, str):
      raise TypeError(f"artifact content must be str, got {type(content).__name__}")
    with self.transaction():
      seq = self._log("artifact_added", {"design_id": design_id, "kind": kind, "chars": len(content)})
      self._db.execute("INSERT INTO artifacts (created_seq, design_id, kind, content) VALUES (?, ?, ?, ?)",
                       (seq, design_id, kind, content))
    return seq

  def artifacts(self, design_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Artifacts in creation order, filtered by design and/or kind when given."""
    sql, args = "SELECT created_seq, design_id, kind, content FROM artifacts WHERE 1", []
    for column, value in (("design_id", design_id), ("kind", kind)):
      if value is not None:
        sql, args = sql + f" AND {column} = ?", args + [value]
    return [dict(r) for r in self._db.execute(sql + " ORDER BY created_seq", args)]

  # -- code units ----------------------------------------------------------------------------
  def add_code_unit(self, kind: str, source: str, declaration: dict[str, Any],
                    design_id: str | None = None) -> bool:
    """Keep a code unit's source; False (and no change) if the kind is already stored."""
    name, _, digest = kind.partition("@")
    with self.transaction():
      cur = self._db.execute(
          "INSERT OR IGNORE INTO code_units (kind, name, hash, source, declaration, design_id, seq) "
          "VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), -1) + 1 FROM code_units))",
          (kind, name, digest, source, json.dumps(declaration, sort_keys=True), design_id))
      if cur.rowcount != 1:
        return False
      self._log("code_unit_added", {"kind": kind, "design_id": design_id})
    return True

  def code_units(self) -> list[dict[str, Any]]:
    """Every stored code unit in the order they were added."""
    rows = self._db.execute("SELECT kind, name, hash, source, declaration, design_id, seq "
                            "FROM code_units ORDER BY seq")
    return [dict(r, declaration=json.loads(r["declaration"])) for r in rows]

  # -- run-level state -----------------------------------------------------------------------
  def get_meta(self, key: str, default: Any = None) -> Any:
    row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row["value"])

  def set_meta(self, key: str, value: Any) -> None:
    with self.transaction():
      self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (key, json.dumps(value, sort_keys=True)))
      self._log("meta_set", {"key": key, "value": value})


def _check_status(status: str) -> None:
  if status not in STATUSES:
    raise ValueError(f"status {status!r} not in {STATUSES}")


def _check_metrics(metrics: dict[str, Any]) -> None:
  """A result has val_bpb, params and tokens; a failure has val_bpb None and an "error" string."""
  if "val_bpb" in metrics and metrics["val_bpb"] is None:
    if not isinstance(metrics.get("error"), str):
      raise ValueError("a failed verification (val_bpb None) needs an 'error' string")
    return
  missing = {"val_bpb", "params", "tokens"} - set(metrics)
  if missing:
    raise ValueError(f"verification metrics lack {sorted(missing)}")


def _design_row(row: sqlite3.Row) -> dict[str, Any]:
  out = dict(row)
  out["parents"] = json.loads(out["parents"])
  out["report"] = json.loads(out["report"])
  return out
