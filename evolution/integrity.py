"""Is the store whole? Checks on opening it, and against what the run left on disk.

- `check_database(db, path)`: SQLite's `PRAGMA quick_check` (page structure, indexes, NOT NULL)
  when a store is opened; a damaged file is a `StoreError` naming it and what to do, never a run
  that silently starts over.
- `checkpoint(db)`: after each committed transaction the WAL is copied into the main file (and
  the next write starts the WAL afresh), so committed history lives in `evolution.db` itself and
  garbage in a leftover `evolution.db-wal` (a crash, a bad disk) cannot take committed rows with
  it.
- `check_workdir(store, workdir)`: every design with a checkpoint or TensorBoard directory in the
  workdir must be in the store; if not, the store lost history (or belongs to another run) and
  the run stops rather than redoing (and overwriting) work it already did.
"""

from __future__ import annotations

import os
import sqlite3

WHAT_TO_DO = ("restore it from a backup, or move it (with evolution.db-wal and evolution.db-shm) "
              "away to start the run afresh")


class StoreError(Exception):
  """A store this code cannot (or must not) use: newer schema, damaged, or not this workdir's."""


def damaged(path: str, detail: str) -> StoreError:
  return StoreError(f"the store {path} is damaged ({detail}); {WHAT_TO_DO}")


def check_database(db: sqlite3.Connection, path: str) -> None:
  rows = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
  if rows != ["ok"]:
    raise damaged(path, "; ".join(str(r) for r in rows))


def checkpoint(db: sqlite3.Connection) -> None:
  """Copy committed WAL frames into the main file (PASSIVE: never waits for other processes)."""
  db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _design_dirs(workdir: str) -> dict[str, str]:
  """{design id: a directory of the workdir that was made for it}."""
  out: dict[str, str] = {}
  for sub in ("checkpoints", "tensorboard"):
    root = os.path.join(workdir, sub)
    if not os.path.isdir(root):
      continue
    for name in sorted(os.listdir(root)):
      if os.path.isdir(os.path.join(root, name)):
        out.setdefault(name, os.path.join(root, name))
  return out


def check_workdir(store, workdir: str) -> None:
  """Raise StoreError if the workdir holds training output of designs the store does not know."""
  dirs = _design_dirs(workdir)
  unknown = [d for d in dirs if not store.has_design(d)]
  if not unknown:
    return
  shown = ", ".join(unknown[:3]) + (f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else "")
  raise StoreError(
      f"the store {getattr(store, 'path', '')} has no record of {len(unknown)} design(s) the workdir trained "
      f"({shown}; e.g. {dirs[unknown[0]]}): it lost history (a damaged or replaced evolution.db "
      f"or evolution.db-wal?) or belongs to another run; {WHAT_TO_DO} (with checkpoints/ and "
      f"tensorboard/)")
