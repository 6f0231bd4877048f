"""The evolution store: migrations, events atomic with their changes, job leases, concurrency, export."""

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from evolution import export as export_lib
from evolution import store as store_lib
from evolution.store import Store, StoreError

# The walking skeleton's schema, frozen: stores written before versioning look exactly like this.
V1_SCHEMA = """
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

GRAPHML = "{http://graphml.graphdrawing.org/xmlns}"


def metrics(bpb=1.5):
  return {"val_bpb": bpb, "params": 1000, "tokens": 4096}


def tree_json(name):
  return json.dumps({"name": name, "tree": {"kind": "sequence", "children": []}})


def make_v1_store(path, user_version=0):
  db = sqlite3.connect(path)
  db.executescript(V1_SCHEMA)
  rows = [("a", [], "seed"), ("b", ["a"], "mutation"), ("c", ["a", "b"], "crossover")]
  for seq, (design_id, parents, operator) in enumerate(rows):
    db.execute("INSERT INTO designs (id, tree, parents, operator, description, seq, status) "
               "VALUES (?, ?, ?, ?, ?, ?, 'valid')", (design_id, tree_json(design_id), json.dumps(parents),
                                                      operator, f"design {design_id}", seq))
  db.execute("INSERT INTO verifications VALUES ('a', 'tiny', ?)", (json.dumps(metrics()),))
  db.execute("INSERT INTO meta VALUES ('proposals_done', '2')")
  db.execute(f"PRAGMA user_version = {user_version}")
  db.commit()
  db.close()


def event_kinds(store):
  return [e["kind"] for e in store.events()]


# -- schema ------------------------------------------------------------------------------------
@pytest.mark.parametrize("user_version", [0, 1])
def test_v1_store_migrates_with_its_lineage(tmp_path, user_version):
  path = tmp_path / "evolution.db"
  make_v1_store(path, user_version)
  with Store(str(path)) as store:
    assert store.version() == store_lib.SCHEMA_VERSION == 5
    assert [d["id"] for d in store.designs()] == ["a", "b", "c"]
    assert [d["canonical"] for d in store.designs()] == [None] * 3  # indexed by the next run
    assert store.designs()[2]["parents"] == ["a", "b"]
    assert store.lineage() == [{"child_id": "b", "parent_id": "a", "position": 0},
                               {"child_id": "c", "parent_id": "a", "position": 0},
                               {"child_id": "c", "parent_id": "b", "position": 1}]
    assert store.ancestors("c") == ["a", "b"] and store.children("a") == ["b", "c"]
    assert store.get_meta("proposals_done") == 2
    assert [(e["kind"], e["payload"]) for e in store.events()] == [("schema_migrated", {"from": 1, "to": 5})]
    assert store.add_design("d", tree_json("d"), ["c"], "mutation", "new", "valid")
  with sqlite3.connect(path) as db:
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5
  with Store(str(path)) as store:  # reopening a current store changes nothing
    assert event_kinds(store) == ["schema_migrated", "design_added"]


def test_failed_migration_leaves_the_v1_store_untouched(tmp_path, monkeypatch):
  path = tmp_path / "evolution.db"
  make_v1_store(path)
  broken = store_lib.MIGRATIONS[:1] + (store_lib.MIGRATIONS[1] + ("CREATE TABLE broken (",),)
  monkeypatch.setattr(store_lib, "MIGRATIONS", broken)
  with pytest.raises(sqlite3.OperationalError):
    Store(str(path))
  with sqlite3.connect(path) as db:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"designs", "verifications", "meta"}
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
  monkeypatch.undo()
  with Store(str(path)) as store:
    assert store.version() == 5 and len(store.lineage()) == 3


def test_newer_store_is_refused_in_one_line(tmp_path):
  path = tmp_path / "evolution.db"
  Store(str(path)).close()
  with sqlite3.connect(path) as db:
    db.execute("PRAGMA user_version = 99")
  with pytest.raises(StoreError, match="schema version 99, newer than this code's 5") as e:
    Store(str(path))
  assert "\n" not in str(e.value)


def test_fresh_store_is_current_and_empty(tmp_path):
  with Store.open(str(tmp_path / "run")) as store:
    assert store.version() == store_lib.SCHEMA_VERSION == 5 and store.events() == [] and store.designs() == []
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- events ------------------------------------------------------------------------------------
def test_every_change_logs_its_event(tmp_path):
  with Store.open(str(tmp_path)) as store:
    assert store.add_design("a", tree_json("a"), [], "seed", "gpt", "valid", {"passed": True})
    assert not store.add_design("a", tree_json("a"), [], "seed", "gpt", "valid")
    assert store.add_design("b", tree_json("b"), ["a"], "mutation", "swap", "valid")
    store.set_status("b", "valid")  # unchanged: no event
    store.set_status("b", "verified")
    store.add_verification("b", "tiny", metrics())
    store.add_verification("b", "small", {"val_bpb": None, "error": "FloatingPointError: nan loss"})
    store.set_meta("proposals_done", 1)
    seq = store.add_artifact("b", "checker_report", json.dumps({"passed": True}))
    store.add_artifact(None, "resolved_config", "{}")
    events = store.events()
    assert [e["kind"] for e in events] == ["design_added", "design_added", "status_set", "verification_added",
                                           "verification_added", "meta_set", "artifact_added", "artifact_added"]
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert events[1]["payload"] == {"id": "b", "seq": 1, "parents": ["a"], "operator": "mutation",
                                    "status": "valid"}
    assert events[4]["payload"]["error"].startswith("FloatingPointError")
    assert store.verifications("b")[0]["metrics"] == {"val_bpb": None, "error": "FloatingPointError: nan loss"}
    assert store.events(since=6, kind="artifact_added")[0]["seq"] == seq == 7
    assert [a["kind"] for a in store.artifacts()] == ["checker_report", "resolved_config"]
    assert store.artifacts("b", "checker_report")[0]["created_seq"] == seq


def test_a_failing_transaction_leaves_no_event(tmp_path):
  with Store.open(str(tmp_path)) as store:
    store.add_design("a", tree_json("a"), [], "seed", "gpt", "valid")
    with pytest.raises(RuntimeError):
      with store.transaction():
        store.add_design("b", tree_json("b"), ["a"], "mutation", "swap", "valid")
        store.set_meta("proposals_done", 1)
        raise RuntimeError("killed between writes")
    with pytest.raises(sqlite3.IntegrityError):
      store.add_verification("nope", "tiny", metrics())
    with pytest.raises(ValueError, match="lack"):
      store.add_verification("a", "tiny", {"val_bpb": 1.0})
    with pytest.raises(ValueError, match="error"):
      store.add_verification("a", "tiny", {"val_bpb": None})
    with store.transaction():  # an inner failure caught by the caller rolls back only itself
      with pytest.raises(sqlite3.IntegrityError):
        store.add_artifact("nope", "report", "{}")
      store.add_artifact("a", "report", "{}")
    assert event_kinds(store) == ["design_added", "artifact_added"]
    assert [d["id"] for d in store.designs()] == ["a"] and store.lineage() == []
    assert store.get_meta("proposals_done") is None and store.verifications() == []



def test_the_loops_failure_record_is_accepted(tmp_path):
  with Store.open(str(tmp_path)) as store:
    store.add_design("a", tree_json("a"), [], "seed", "gpt", "valid")
    failure = {"val_bpb": None, "params": None, "tokens": None, "error": ""}
    with store.transaction():
      store.add_verification("a", "tiny", failure)
      store.set_status("a", "failed")
    assert store.verifications() == [{"design_id": "a", "rung": "tiny", "metrics": failure}]

# -- jobs --------------------------------------------------------------------------------------
class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def store_with_designs(path, n, clock=None):
  store = Store(str(path), clock=clock or Clock())
  with store.transaction():
    for i in range(n):
      store.add_design(f"d{i:04d}", tree_json(i), [], "seed", str(i), "valid")
  return store


def test_jobs_are_claimed_in_queue_order_once(tmp_path):
  with store_with_designs(tmp_path / "evolution.db", 2) as store:
    assert store.enqueue("d0001", "tiny") and store.enqueue("d0000", "tiny")
    assert not store.enqueue("d0001", "tiny")
    assert store.claim("w0", 60) == ("d0001", "tiny")
    assert store.claim("w1", 60) == ("d0000", "tiny")
    assert store.claim("w2", 60) is None
    assert not store.complete("d0000", "tiny", "w0", metrics())  # w1 holds it
    assert store.release("w1", "d0000", "tiny") and not store.release("w1", "d0000", "tiny")
    assert store.claim("w2", 60) == ("d0000", "tiny")
    with pytest.raises(ValueError):
      store.complete("d0000", "tiny", "w2", {"val_bpb": 1.0})
    assert store.jobs("claimed")[1] == {"design_id": "d0000", "rung": "tiny", "state": "claimed",
                                        "worker_id": "w2", "lease_until": 1060.0, "attempts": 2}
    assert store.complete("d0000", "tiny", "w2", metrics(), status="verified")
    assert store.design("d0000")["status"] == "verified"
    assert [j["state"] for j in store.jobs()] == ["claimed", "done"]
    assert event_kinds(store)[2:] == ["job_enqueued", "job_enqueued", "job_claimed", "job_claimed",
                                      "job_released", "job_claimed", "verification_added", "status_set",
                                      "job_completed"]


def test_dead_workers_lease_expires_and_another_worker_completes(tmp_path):
  clock = Clock()
  path = tmp_path / "evolution.db"
  store_with_designs(path, 1, clock).enqueue("d0000", "tiny")
  dead, alive = Store(str(path), clock=clock), Store(str(path), clock=clock)
  assert dead.claim("dead", lease_s=30) == ("d0000", "tiny")
  clock.now += 20
  assert dead.heartbeat("dead", "d0000", "tiny", lease_s=30)  # lease now ends at 1050
  clock.now += 29
  assert alive.claim("alive", 30) is None
  clock.now += 1  # the dead worker never heartbeats again
  assert alive.claim("alive", 30) == ("d0000", "tiny")
  assert not dead.heartbeat("dead", "d0000", "tiny", 30)
  assert not dead.complete("d0000", "tiny", "dead", metrics(1.0))
  assert alive.complete("d0000", "tiny", "alive", metrics(2.0))
  assert [v["metrics"]["val_bpb"] for v in alive.verifications()] == [2.0]
  expired = alive.events(kind="job_expired")
  assert [e["payload"] for e in expired] == [{"design_id": "d0000", "rung": "tiny", "worker_id": "dead",
                                              "attempt": 1}]
  assert alive.jobs() == [{"design_id": "d0000", "rung": "tiny", "state": "done", "worker_id": "alive",
                           "lease_until": None, "attempts": 2}]
  dead.close()
  alive.close()


def _worker(path, worker_id, n_claims):
  """One worker process: claim and complete `n_claims` jobs, reporting what it got."""
  done = []
  with Store(path) as store:
    for _ in range(n_claims):
      job = store.claim(worker_id, lease_s=3600)
      if job is None:
        break
      done.append((*job, store.complete(*job, worker_id, {**metrics(), "worker": worker_id})))
  return done


def test_concurrent_workers_claim_and_complete_every_job_once(tmp_path):
  path = tmp_path / "evolution.db"
  n_workers, n_claims = 4, 200
  with store_with_designs(path, n_workers * n_claims // 2) as store, store.transaction():
    for d in store.designs():
      for rung in ("tiny", "small"):
        store.enqueue(d["id"], rung)
  with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
    results = pool.starmap(_worker, [(str(path), f"w{i}", n_claims) for i in range(n_workers)])
  assert [len(r) for r in results] == [n_claims] * n_workers
  claimed = [(d, r) for result in results for d, r, _ in result]
  assert len(set(claimed)) == len(claimed) == n_workers * n_claims
  assert all(ok for result in results for *_, ok in result)
  with Store(str(path)) as store:
    verifications = store.verifications()
    assert sorted((v["design_id"], v["rung"]) for v in verifications) == sorted(claimed)
    by_worker = {(d, r): f"w{i}" for i, result in enumerate(results) for d, r, _ in result}
    assert all(v["metrics"]["worker"] == by_worker[v["design_id"], v["rung"]] for v in verifications)
    assert {j["state"] for j in store.jobs()} == {"done"} and len(store.jobs()) == 800
    kinds = event_kinds(store)
    for kind in ("job_enqueued", "job_claimed", "verification_added", "job_completed"):
      assert kinds.count(kind) == 800, kind
    assert [e["seq"] for e in store.events()] == list(range(1, len(kinds) + 1))


# -- export ------------------------------------------------------------------------------------
@pytest.fixture
def run_dir(tmp_path):
  with Store.open(str(tmp_path)) as store:
    store.add_design("a", tree_json("a"), [], "seed", "gpt", "verified")
    store.add_design("b", tree_json("b"), ["a"], "mutation", "swap <mlp> & \"glu\"", "verified")
    store.add_design("c", tree_json("c"), ["a", "b"], "crossover", "a x b", "failed")
    store.add_design("d", tree_json("d"), ["b"], "mutation", "drop norm", "rejected")
    store.add_verification("a", "tiny", metrics(1.9))
    store.add_verification("a", "small", metrics(1.7))
    store.add_verification("b", "tiny", metrics(1.8))
    store.add_verification("c", "tiny", {"val_bpb": None, "error": "FloatingPointError: nan"})
  return tmp_path


def test_export_writes_the_tree_as_json_and_graphml(run_dir):
  json_path, graphml_path, _ = export_lib.export(str(run_dir))
  assert json_path == str(run_dir / "evolution_tree.json")
  with open(json_path) as f:
    tree = json.load(f)
  assert [(n["id"], n["seq"], n["operator"], n["status"]) for n in tree["nodes"]] == [
      ("a", 0, "seed", "verified"), ("b", 1, "mutation", "verified"), ("c", 2, "crossover", "failed"),
      ("d", 3, "mutation", "rejected")]
  assert tree["nodes"][0]["metrics"] == {"small": metrics(1.7), "tiny": metrics(1.9)}
  assert tree["nodes"][2]["metrics"]["tiny"]["val_bpb"] is None
  assert tree["nodes"][1]["tree"]["name"] == "b" and tree["nodes"][1]["description"] == "swap <mlp> & \"glu\""
  assert tree["edges"] == [{"source": "a", "target": "b", "operator": "mutation", "position": 0},
                           {"source": "a", "target": "c", "operator": "crossover", "position": 0},
                           {"source": "b", "target": "c", "operator": "crossover", "position": 1},
                           {"source": "b", "target": "d", "operator": "mutation", "position": 0}]

  root = ET.parse(graphml_path).getroot()
  assert root.tag == GRAPHML + "graphml"
  children = [c.tag for c in root]
  assert children == [GRAPHML + "key"] * children.count(GRAPHML + "key") + [GRAPHML + "graph"]
  keys = {k.get("id"): k for k in root.iter(GRAPHML + "key")}
  assert all(k.get("attr.type") in ("boolean", "int", "long", "float", "double", "string") for k in keys.values())
  graph = root.find(GRAPHML + "graph")
  assert graph.get("edgedefault") == "directed"
  nodes, edges = graph.findall(GRAPHML + "node"), graph.findall(GRAPHML + "edge")
  assert len(nodes) == 4 and len(edges) == 4
  assert {e.get("source") for e in edges} | {e.get("target") for e in edges} <= {n.get("id") for n in nodes}

  def attrs(element, domain):
    out = {}
    for data in element.findall(GRAPHML + "data"):
      key = keys[data.get("key")]
      assert key.get("for") == domain
      out[key.get("attr.name")] = data.text
    return out

  a, _, c, _ = (attrs(n, "node") for n in nodes)
  assert a["val_bpb@tiny"] == "1.9" and a["val_bpb@small"] == "1.7" and a["operator"] == "seed"
  assert "val_bpb@tiny" not in c and json.loads(c["metrics"])["tiny"]["error"].startswith("Floating")
  assert json.loads(a["tree"])["name"] == "a"
  assert attrs(edges[2], "edge") == {"operator": "crossover", "position": "1"}


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "genesys_jax.cli.export", *args], capture_output=True, text=True)


def test_export_cli(run_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("out") / "sub" / "tree"
  result = run_cli(f"--workdir={run_dir}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  assert "4 designs, 4 edges" in result.stdout
  assert len(json.loads(out.with_suffix(".json").read_text())["nodes"]) == 4
  assert ET.parse(out.with_suffix(".graphml")).getroot().tag == GRAPHML + "graphml"
  empty = tmp_path_factory.mktemp("empty")
  for workdir in (empty / "missing", empty):
    result = run_cli(f"--workdir={workdir}")
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert result.stderr.strip().count("\n") == 0
  assert list(empty.iterdir()) == []
