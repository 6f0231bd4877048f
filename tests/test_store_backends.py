"""The store's API on both backends: SQLite and a real PostgreSQL server (tests/pg_server.py).

The same calls must give the same answers on both; claims from many processes must hand every job
out exactly once; a worker killed while holding a job loses it once its lease runs out.
"""

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from evolution import store as store_lib
from evolution import store_url
from evolution.store import Store, StoreError
from pg_server import fresh_database

BACKENDS = ("sqlite", "postgres")


def metrics(bpb=1.5):
  return {"val_bpb": bpb, "params": 1000, "tokens": 4096}


def tree_json(name):
  return json.dumps({"name": name, "tree": {"kind": "sequence", "children": []}})


class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
  """A store URL of a fresh, empty store on each backend."""
  if request.param == "sqlite":
    return f"sqlite:///{tmp_path}/evolution.db"
  return fresh_database()


def integrity_errors():
  import psycopg  # pylint: disable=g-import-not-at-top
  return (sqlite3.IntegrityError, psycopg.IntegrityError)


def scripted_session(store):
  """Every kind of write and read the loop and export use; returns what the reads gave."""
  store.add_design("a", tree_json("a"), [], "seed", "gpt", "valid", {"passed": True})
  store.add_design("b", tree_json("b"), ["a"], "mutation", "swap 50% of ? marks", "valid")
  assert not store.add_design("b", tree_json("b"), ["a"], "mutation", "again", "valid")
  store.add_design("c", tree_json("c"), ["a", "b"], "crossover", "a x b", "rejected", canonical="cc")
  store.set_canonical({"a": "ca", "c": "not this: c has one"})
  store.add_verification("a", "tiny", metrics(1.9))
  store.add_verification("a", "tiny", metrics(1.8))  # replaced
  store.set_status("a", "verified")
  store.add_artifact("a", "fingerprint", "fp-a")
  store.add_artifact(None, "replay", "{}")
  store.set_meta("proposals_done", 2)
  store.set_meta("proposals_done", 3)
  with store.transaction():  # an inner failure caught by the caller rolls back only itself
    with pytest.raises(integrity_errors()):
      store.add_artifact("nope", "report", "{}")
    store.add_artifact("b", "report", "{}")
  with pytest.raises(ValueError, match="lack"):
    store.add_verification("a", "small", {"val_bpb": 1.0})
  return {
      "designs": [(d["id"], d["parents"], d["operator"], d["description"], d["seq"], d["status"],
                   d["report"]) for d in store.designs()],
      "valid": [d["id"] for d in store.designs("valid")],
      "design": store.design("c")["parents"],
      "canonical": [d["canonical"] for d in store.designs()],
      "verifications": store.verifications(), "verification": store.verification("a", "tiny"),
      "by_design": store.metrics_by_design(), "by_design_tiny": store.metrics_by_design(["small", "tiny"]),
      "lineage": store.lineage(), "children": store.children("a"), "ancestors": store.ancestors("c"),
      "artifacts": store.artifacts(), "fingerprints": store.artifacts(kind="fingerprint"),
      "meta": store.get_meta("proposals_done"), "absent": store.get_meta("nothing", 7),
      "events": store.events(), "events_since": store.events(since=5, kind="meta_set"),
      "has": (store.has_design("a"), store.has_design("z"), store.has_verification("a", "tiny")),
      "version": store.version(),
  }


def test_both_backends_answer_every_call_the_same(tmp_path):
  with Store(str(tmp_path / "evolution.db")) as sqlite:
    expected = scripted_session(sqlite)
  with store_url.open_store(fresh_database()) as pg:
    got = scripted_session(pg)
  assert got == expected
  assert got["canonical"] == ["ca", None, "cc"] and got["verification"] == metrics(1.8)
  assert [e["seq"] for e in got["events"]] == list(range(1, len(got["events"]) + 1))
  assert got["version"] == store_lib.SCHEMA_VERSION


def test_postgres_tables_have_the_sqlite_columns(tmp_path):
  url = fresh_database()
  store_url.open_store(url).close()
  import psycopg  # pylint: disable=g-import-not-at-top
  with psycopg.connect(url) as conn:
    pg = {(t, c) for t, c in conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                                          "WHERE table_schema = 'public'")}
  db = sqlite3.connect(tmp_path / "x.db")
  Store(str(tmp_path / "x.db")).close()
  tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "AND name NOT LIKE 'sqlite_%'")]
  lite = {(t, r[1]) for t in tables for r in db.execute(f"PRAGMA table_info({t})")}
  assert lite and lite <= pg and pg - lite == {("store_schema", "version")}
  again = store_url.open_store(url)  # a second open finds the schema current
  assert again.version() == store_lib.SCHEMA_VERSION
  again.close()


def test_unreachable_or_unknown_store_is_one_clear_error(tmp_path):
  with pytest.raises(StoreError, match="cannot connect to the PostgreSQL store postgresql://u:\\*\\*\\*@"):
    store_url.open_store("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")
  with pytest.raises(StoreError, match="expected ''"):
    store_url.open_store("mysql://x/y")


def test_jobs_are_claimed_in_order_and_a_dead_workers_lease_expires(url):
  clock = Clock()
  store = store_url.open_store(url, clock=clock)
  with store.transaction():
    for i in range(2):
      store.add_design(f"d{i}", tree_json(i), [], "seed", str(i), "valid")
  assert store.enqueue("d1", "tiny") and store.enqueue("d0", "tiny") and not store.enqueue("d1", "tiny")
  dead, alive = store, store_url.open_store(url, clock=clock)
  assert dead.claim("dead", 30) == ("d1", "tiny")
  assert alive.claim("alive", 3600) == ("d0", "tiny")
  assert alive.claim("other", 30) is None
  clock.now += 20
  assert dead.heartbeat("dead", "d1", "tiny", 30)  # lease now ends at 1050
  clock.now += 29
  assert alive.claim("alive", 30) is None
  clock.now += 1
  assert alive.claim("alive", 30) == ("d1", "tiny")
  assert not dead.heartbeat("dead", "d1", "tiny", 30)
  assert not dead.complete("d1", "tiny", "dead", metrics(1.0))
  assert alive.complete("d1", "tiny", "alive", metrics(2.0), status="verified")
  assert alive.release("alive", "d0", "tiny") and not alive.release("alive", "d0", "tiny")
  assert [e["payload"] for e in alive.events(kind="job_expired")] == [
      {"design_id": "d1", "rung": "tiny", "worker_id": "dead", "attempt": 1}]
  assert alive.jobs() == [
      {"design_id": "d1", "rung": "tiny", "state": "done", "worker_id": "alive", "lease_until": None,
       "attempts": 2},
      {"design_id": "d0", "rung": "tiny", "state": "pending", "worker_id": None, "lease_until": None,
       "attempts": 1}]
  assert alive.design("d1")["status"] == "verified"
  dead.close()
  alive.close()


def test_a_checker_job_records_its_result_once_and_the_check_sets_status_and_report(url):
  clock = Clock()
  store = store_url.open_store(url, clock=clock)
  with store.transaction():
    store.add_design("d0", tree_json(0), [], "mutation", "m", "checking", {"checking": True, "proposal": 0})
    assert store.enqueue("d0", store_lib.CHECK_JOB)
  assert store.check_result("d0") is None and [d["id"] for d in store.designs("checking")] == ["d0"]
  assert store.claim("dead", 30) == ("d0", "check")
  clock.now += 31
  assert store.claim("alive", 30) == ("d0", "check")
  result = {"report": {"passed": True, "checks": [], "sizing": {}}, "fingerprint": "fp"}
  assert not store.complete_check("d0", "dead", result)  # its lease was taken over: no record
  assert store.check_result("d0") is None
  assert store.complete_check("d0", "alive", result)
  assert not store.complete_check("d0", "alive", result)  # done: a second record is refused
  assert store.check_result("d0") == result and store.verifications() == []
  assert [(j["rung"], j["state"], j["worker_id"], j["attempts"]) for j in store.jobs()] == [
      ("check", "done", "alive", 2)]
  store.set_status("d0", "valid", {"passed": True, "checks": [], "sizing": {}})
  assert store.design("d0")["status"] == "valid" and store.design("d0")["report"]["passed"]
  store.set_status("d0", "valid", {"passed": True, "checks": [], "sizing": {"d_model": 8}})
  assert store.design("d0")["report"]["sizing"] == {"d_model": 8}  # same status, new report
  assert [e["payload"] for e in store.events(kind="status_set")] == [
      {"id": "d0", "status": "valid", "previous": "checking"}]
  store.close()


def _claimer(url, worker_id, n_claims):
  """One worker process: claim and complete `n_claims` jobs, reporting what it got."""
  done = []
  with store_url.open_store(url) as store:
    for _ in range(n_claims):
      job = store.claim(worker_id, lease_s=3600)
      if job is None:
        break
      done.append((*job, store.complete(*job, worker_id, {**metrics(), "worker": worker_id})))
  return done


def claim_from_many_processes(url, n_workers, n_claims):
  with store_url.open_store(url) as store, store.transaction():
    for i in range(n_workers * n_claims // 2):
      store.add_design(f"d{i:05d}", tree_json(i), [], "seed", str(i), "valid")
      for rung in ("tiny", "small"):
        store.enqueue(f"d{i:05d}", rung)
  with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
    results = pool.starmap(_claimer, [(url, f"w{i}", n_claims) for i in range(n_workers)])
  n = n_workers * n_claims
  assert [len(r) for r in results] == [n_claims] * n_workers
  claimed = [(d, r) for result in results for d, r, _ in result]
  assert len(set(claimed)) == len(claimed) == n
  assert all(ok for result in results for *_, ok in result)
  with store_url.open_store(url) as store:
    verifications = store.verifications()
    assert sorted((v["design_id"], v["rung"]) for v in verifications) == sorted(claimed)
    by_worker = {(d, r): f"w{i}" for i, result in enumerate(results) for d, r, _ in result}
    assert all(v["metrics"]["worker"] == by_worker[v["design_id"], v["rung"]] for v in verifications)
    assert {j["state"] for j in store.jobs()} == {"done"} and len(store.jobs()) == n
    assert all(j["attempts"] == 1 for j in store.jobs())
    kinds = [e["kind"] for e in store.events()]
    for kind in ("job_enqueued", "job_claimed", "verification_added", "job_completed"):
      assert kinds.count(kind) == n, kind
    assert [e["seq"] for e in store.events()] == list(range(1, len(kinds) + 1))


def test_two_processes_claim_every_job_exactly_once(url):
  claim_from_many_processes(url, 2, 40)


@pytest.mark.slow
def test_eight_processes_by_500_claims_every_job_exactly_once(url):
  claim_from_many_processes(url, 8, 500)


HOLDER = """
import sys, time
from evolution import store_url
store = store_url.open_store(sys.argv[1])
print(store.claim("holder", lease_s=float(sys.argv[2])), flush=True)
time.sleep(600)
"""


def test_a_worker_killed_holding_a_job_loses_it_after_its_lease(url):
  with store_url.open_store(url) as store:
    store.add_design("d0", tree_json(0), [], "seed", "0", "valid")
    store.enqueue("d0", "tiny")
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, "2.0"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
  assert holder.stdout.readline().strip() == "('d0', 'tiny')"
  killed_at = time.monotonic()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with store_url.open_store(url) as store:
    while (job := store.claim("taker", 60)) is None:
      assert time.monotonic() - killed_at < 30, "the dead worker's job was never taken over"
      time.sleep(0.1)
    assert job == ("d0", "tiny")
    assert store.complete("d0", "tiny", "taker", metrics())
    assert [e["payload"]["worker_id"] for e in store.events(kind="job_expired")] == ["holder"]
    assert [(j["state"], j["worker_id"], j["attempts"]) for j in store.jobs()] == [("done", "taker", 2)]


# -- refusing an SQLite store shared by several hosts ------------------------------------------
MOUNTS = """/dev/sda1 / ext4 rw 0 0
fileserver:/export /mnt/shared nfs4 rw,vers=4.2 0 0
bucket /mnt/gcs fuse.gcsfuse rw 0 0
"""


def test_sqlite_on_a_network_filesystem_is_refused():
  assert store_url.filesystem_type("/mnt/shared/run/x", MOUNTS) == "nfs4"
  assert store_url.filesystem_type("/mnt/sharedx", MOUNTS) == "ext4"
  with pytest.raises(StoreError, match=r"network filesystem \(fuse.gcsfuse\): SQLite must not be used "
                                       r"over a network filesystem.*postgresql://"):
    store_url.check_sqlite_path("/mnt/gcs/run/evolution.db", MOUNTS)


def test_sqlite_store_opened_from_a_second_host_is_refused(tmp_path):
  path = str(tmp_path / "evolution.db")
  store_url.check_sqlite_path(path, host="host-a")
  store_url.check_sqlite_path(path, host="host-a")
  with pytest.raises(StoreError, match="created on host 'host-a' and this is 'host-b': an SQLite store "
                                       "must not be shared by several hosts"):
    store_url.check_sqlite_path(path, host="host-b")
  store_url.open_store("", str(tmp_path / "run")).close()  # this host: fine
  assert (tmp_path / "run" / "evolution.db.host").read_text().strip()


def test_a_schema_3_store_migrates_to_4_on_both_backends(tmp_path):
  """The designs' `canonical` column (schema 4) is added to a store written at schema 3, its rows
  left NULL until a run indexes them (genesys_jax/state.py); on PostgreSQL too."""
  from evolution import schema, store_pg  # pylint: disable=g-import-not-at-top
  import psycopg  # pylint: disable=g-import-not-at-top
  path = tmp_path / "evolution.db"
  db = sqlite3.connect(path)
  for steps in schema.MIGRATIONS[:3]:
    for sql in steps:
      db.execute(sql)
  db.execute("PRAGMA user_version = 3")
  db.execute("INSERT INTO designs (id, tree, parents, operator, description, seq, status, report) "
             "VALUES ('a', '{}', '[]', 'seed', 'gpt', 0, 'valid', '{}')")
  db.commit()
  db.close()
  url = fresh_database()
  with psycopg.connect(url, autocommit=True) as conn:
    for v, steps in enumerate(schema.MIGRATIONS[:3]):
      for i, sql in enumerate(steps):
        conn.execute(store_pg._pg_statement(v, i, sql))  # pylint: disable=protected-access
    conn.execute("CREATE TABLE store_schema (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO store_schema (version) VALUES (3)")
    conn.execute("INSERT INTO designs (id, tree, parents, operator, description, seq, status, report) "
                 "VALUES ('a', '{}', '[]', 'seed', 'gpt', 0, 'valid', '{}')")
  for store_of in (lambda: Store(str(path)), lambda: store_url.open_store(url)):
    with store_of() as store:
      assert store.version() == schema.SCHEMA_VERSION == 5
      assert [(e["kind"], e["payload"]) for e in store.events()] == [("schema_migrated", {"from": 3, "to": 5})]
      assert store.design("a")["canonical"] is None
      store.set_canonical({"a": "c-a"})
      assert store.design("a")["canonical"] == "c-a" and store.events()[-1]["kind"] == "designs_indexed"
