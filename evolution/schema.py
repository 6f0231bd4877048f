"""The store's schema as migrations: `MIGRATIONS[v]` takes a store from version v to v + 1.

Written once in SQLite's dialect; `evolution/store_pg.py` translates each statement for PostgreSQL.
Version 1 is the walking skeleton's schema (IF NOT EXISTS: stores written before versioning have
those tables at user_version 0).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("""CREATE TABLE IF NOT EXISTS designs (
          id TEXT PRIMARY KEY,
          tree TEXT NOT NULL,
          parents TEXT NOT NULL,
          operator TEXT NOT NULL,
          description TEXT NOT NULL DEFAULT '',
          seq INTEGER NOT NULL UNIQUE,
          status TEXT NOT NULL,
          report TEXT NOT NULL DEFAULT '{}')""",
     """CREATE TABLE IF NOT EXISTS verifications (
          design_id TEXT NOT NULL REFERENCES designs(id),
          rung TEXT NOT NULL,
          metrics TEXT NOT NULL,
          PRIMARY KEY (design_id, rung))""",
     "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
    ("""CREATE TABLE lineage (
          child_id TEXT NOT NULL REFERENCES designs(id),
          parent_id TEXT NOT NULL,
          position INTEGER NOT NULL,
          PRIMARY KEY (child_id, position))""",
     "CREATE INDEX lineage_by_parent ON lineage (parent_id)",
     """INSERT INTO lineage (child_id, parent_id, position)
          SELECT d.id, p.value, p.key FROM designs d, json_each(d.parents) p""",
     """CREATE TABLE artifacts (
          created_seq INTEGER PRIMARY KEY,
          design_id TEXT REFERENCES designs(id),
          kind TEXT NOT NULL,
          content TEXT NOT NULL)""",
     "CREATE INDEX artifacts_by_design ON artifacts (design_id, kind)",
     """CREATE TABLE events (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          kind TEXT NOT NULL,
          payload TEXT NOT NULL CHECK (json_valid(payload)))""",
     """CREATE TABLE jobs (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          design_id TEXT NOT NULL REFERENCES designs(id),
          rung TEXT NOT NULL,
          state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done')),
          worker_id TEXT,
          lease_until REAL,
          attempts INTEGER NOT NULL DEFAULT 0,
          UNIQUE (design_id, rung))""",
     "CREATE INDEX jobs_by_state ON jobs (state, id)"),
    # 2 -> 3: code units (gab.codeunits), kept apart from the designs that carry them.
    ("""CREATE TABLE code_units (
          kind TEXT PRIMARY KEY,
          name TEXT NOT NULL,
          hash TEXT NOT NULL,
          source TEXT NOT NULL,
          declaration TEXT NOT NULL CHECK (json_valid(declaration)),
          design_id TEXT,
          seq INTEGER NOT NULL UNIQUE)""",),
    # 3 -> 4: each design's canonical id (evolution.canonical), so that a run's index of what it
    # stored is read, not recomputed by parsing every tree (NULL in older rows until indexed).
    ("ALTER TABLE designs ADD COLUMN canonical TEXT",),
    # 4 -> 5: the "leaking" status and voided verifications (the post-training audit, gab.audit):
    # stores that may hold them are version 5, so a genesys_jax that does not know them refuses
    # to open one instead of ranking a leaking design.
    ("CREATE INDEX designs_by_status ON designs (status)",),
)
SCHEMA_VERSION = len(MIGRATIONS)
