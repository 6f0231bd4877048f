"""The evolution store: every design and verification of a run, in SQLite at WORKDIR/evolution.db.

Tables:
  designs(id, tree, parents, operator, description, seq, status, report)
    id = the tree's content hash; tree = design JSON; parents = JSON list of ids;
    seq = creation order; status in {valid, rejected, verified, failed}.
  verifications(design_id, rung, metrics)   metrics = JSON with at least val_bpb, params, tokens.
  meta(key, value)                          run-level counters (e.g. the next proposal index).
Each write is one transaction, so a run killed at any moment leaves a consistent store.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS designs (
  id TEXT PRIMARY KEY,
  tree TEXT NOT NULL,
  parents TEXT NOT NULL,
  operator TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  seq INTEGER NOT NULL UNIQUE,
  status TEXT NOT NULL,
  report TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS verifications (
  design_id TEXT NOT NULL REFERENCES designs(id),
  rung TEXT NOT NULL,
  metrics TEXT NOT NULL,
  PRIMARY KEY (design_id, rung)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

STATUSES = ("valid", "rejected", "verified", "failed")


class Store:
  """A thin, transactional view of the run's SQLite database."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    self._db.row_factory = sqlite3.Row
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA foreign_keys=ON")
    self._db.executescript(SCHEMA)

  @classmethod
  def open(cls, workdir: str) -> "Store":
    return cls(os.path.join(workdir, "evolution.db"))

  def close(self):
    self._db.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def transaction(self):
    """`with store.transaction():` groups writes; all land or none do."""
    return _Transaction(self._db)

  # -- designs -------------------------------------------------------------------------------
  def add_design(self, design_id: str, tree_json: str, parents: Iterable[str], operator: str,
                 description: str, status: str, report: dict | None = None) -> bool:
    """Insert a design; False (and no change) if the id is already stored."""
    if status not in STATUSES:
      raise ValueError(f"status {status!r} not in {STATUSES}")
    cur = self._db.execute(
        "INSERT OR IGNORE INTO designs (id, tree, parents, operator, description, seq, status, report) "
        "VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), -1) + 1 FROM designs), ?, ?)",
        (design_id, tree_json, json.dumps(list(parents)), operator, description, status,
         json.dumps(report or {}, sort_keys=True)))
    return cur.rowcount == 1

  def has_design(self, design_id: str) -> bool:
    return self._db.execute("SELECT 1 FROM designs WHERE id = ?", (design_id,)).fetchone() is not None

  def set_status(self, design_id: str, status: str) -> None:
    if status not in STATUSES:
      raise ValueError(f"status {status!r} not in {STATUSES}")
    self._db.execute("UPDATE designs SET status = ? WHERE id = ?", (status, design_id))

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

  # -- verifications -------------------------------------------------------------------------
  def add_verification(self, design_id: str, rung: str, metrics: dict[str, Any]) -> None:
    missing = {"val_bpb", "params", "tokens"} - set(metrics)
    if missing:
      raise ValueError(f"verification metrics lack {sorted(missing)}")
    self._db.execute("INSERT OR REPLACE INTO verifications (design_id, rung, metrics) VALUES (?, ?, ?)",
                     (design_id, rung, json.dumps(metrics, sort_keys=True)))

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

  def has_verification(self, design_id: str, rung: str) -> bool:
    return self._db.execute("SELECT 1 FROM verifications WHERE design_id = ? AND rung = ?",
                            (design_id, rung)).fetchone() is not None

  # -- run-level state -----------------------------------------------------------------------
  def get_meta(self, key: str, default: Any = None) -> Any:
    row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row["value"])

  def set_meta(self, key: str, value: Any) -> None:
    self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (key, json.dumps(value, sort_keys=True)))


class _Transaction:
  def __init__(self, db: sqlite3.Connection):
    self._db = db

  def __enter__(self):
    self._db.execute("BEGIN IMMEDIATE")

  def __exit__(self, exc_type, *exc):
    self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _design_row(row: sqlite3.Row) -> dict[str, Any]:
  out = dict(row)
  out["parents"] = json.loads(out["parents"])
  out["report"] = json.loads(out["report"])
  return out
