"""Controller and verifier workers: the same designs and metrics as the one-process run, whatever
the number of workers, a worker SIGKILLed mid-training, and a multi-host (jax.distributed) worker."""

import importlib.util
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from evolution.store import Store
from genesys_jax import loop, replay


def smoke_config(**evolution):
  spec = importlib.util.spec_from_file_location("ladder", "configs/ladder.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.evolution.update(evolution)
  return config


def external(config, **jobs):
  config = config.copy_and_resolve_references()
  config.jobs.in_process = False
  config.jobs.poll_s = 0.2
  config.jobs.update(jobs)
  return config


def start_worker(workdir, worker_id, *extra, devices=1):
  env = dict(os.environ, PYTHONPATH=os.getcwd(),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen([sys.executable, "-m", "genesys_jax.worker", f"--workdir={workdir}",
                           f"--worker_id={worker_id}", *extra], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


TIMED_OUT = "a check hit checker.timeout_s"


def _report(design):
  """Its checker report, unless a check ran into the wall-clock limit: that verdict measures the
  machine's load (seen: causality over 300 s on the loaded 2-core machine), so it is not compared,
  like replay's timing fields (the statuses still are)."""
  checks = design["report"].get("checks", [])
  return TIMED_OUT if any("did not finish within its timeout" in c["message"] for c in checks) else design["report"]


def assert_same_run(reference, workdir):
  """The same designs, statuses, checker reports, fingerprints and metrics."""
  with Store.open(str(workdir)) as store:
    result = replay.compare(str(reference), store)
    assert not result["diverged"], result["first_divergence"]
    with Store.open(str(reference)) as ref:
      assert result["designs"] == len(ref.designs()) == len(store.designs())
      assert len(store.verifications()) == len(ref.verifications())
      reports = [(_report(a), _report(b)) for a, b in zip(store.designs(), ref.designs())]
      assert [a for a, b in reports if TIMED_OUT not in (a, b)] == [b for a, b in reports if TIMED_OUT not in (a, b)]
      fingerprints = lambda s: [(a["design_id"], a["content"]) for a in s.artifacts(kind="fingerprint")]
      assert fingerprints(store) == fingerprints(ref)


def assert_each_job_done_once(workdir):
  """Every job done, each recorded once: a verification per training job, a "check" artifact per
  checker job (one per proposal of the run)."""
  with Store.open(str(workdir)) as store:
    jobs = store.jobs()
    assert jobs and {j["state"] for j in jobs} == {"done"}
    done = [(e["payload"]["design_id"], e["payload"]["rung"]) for e in store.events(kind="job_completed")]
    assert sorted(done) == sorted((j["design_id"], j["rung"]) for j in jobs)
    training = [j for j in jobs if j["rung"] != "check"]
    added = store.events(kind="verification_added")
    assert len(added) == len(training) and not any(e["payload"]["replaced"] for e in added)
    checks = sorted(j["design_id"] for j in jobs if j["rung"] == "check")
    assert checks == sorted(a["design_id"] for a in store.artifacts(kind="check"))
    assert checks == sorted(d["id"] for d in store.designs() if d["operator"] != "seed")
    assert not store.designs("checking")
    return store.jobs(), store.events()


@pytest.mark.slow  # ~4 min: a full smoke run through a worker (the other worker tests are default)
def test_a_verifier_worker_checks_and_trains_the_controllers_jobs_like_the_one_process_run(tmp_path):
  """One worker, started before the controller (it waits for the run): the checks of the
  proposals and every training run on it, with the one-process run's designs, checker reports,
  fingerprints, metrics and log lines."""
  config = smoke_config(n_proposals=2)
  config.jobs.generation = 2
  for rung in ("tiny", "small"):
    config.rungs[rung].train_tokens = 2048
    config.rungs[rung].eval_batches = 1
  one_lines, two_lines = [], []
  loop.run(config, str(tmp_path / "one"), log=one_lines.append)
  worker = start_worker(tmp_path / "two", "w0")
  loop.run(external(config), str(tmp_path / "two"), log=two_lines.append)
  out, _ = worker.communicate(timeout=600)
  assert worker.returncode == 0, out[-3000:]
  assert any("waiting for verifier workers:" in line for line in two_lines)
  assert_same_run(tmp_path / "one", tmp_path / "two")
  jobs, events = assert_each_job_done_once(tmp_path / "two")
  assert all((j["worker_id"], j["attempts"]) == ("w0", 1) for j in jobs)
  assert f"worker w0: {len(jobs)} job(s) done; exiting" in out
  checks = [j for j in jobs if j["rung"] == "check"]
  assert len(checks) == 2
  # The checker jobs were all done before any training job of their generation was queued.
  kinds = [(e["kind"], e["payload"].get("rung")) for e in events if e["kind"].startswith("job_")]
  last_check = max(i for i, k in enumerate(kinds) if k == ("job_completed", "check"))
  assert ("job_enqueued", "check") not in kinds[last_check:]
  assert any(k[0] == "job_enqueued" and k[1] != "check" for k in kinds[last_check:])
  verdicts = lambda lines: [l for l in lines if l.startswith("[") and "queued for" not in l]
  assert len(verdicts(one_lines)) == 2 and len(verdicts(two_lines)) == 2
  assert all(a == b for a, b in zip(verdicts(two_lines), verdicts(one_lines))
             if "did not finish within its timeout" not in a + b)  # (see _report)
  assert sum("queued for a verifier worker's check" in l for l in two_lines) == 2
  with Store.open(str(tmp_path / "one")) as store:  # the one-process run checked and trained in-process
    assert not [j for j in store.jobs() if j["rung"] == "check"] and not store.artifacts(kind="check")
    assert {j["worker_id"].split("@")[0] for j in store.jobs()} == {"in-process"}
    assert store.get_meta("run_finished") is None and not store.artifacts(kind="config")


GENERATION = dict(n_proposals=3)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one_process")
  config = smoke_config(**GENERATION)
  config.jobs.generation = 3
  loop.run(config, str(workdir), log=lambda _: None)
  return workdir, config


@pytest.mark.slow
def test_three_workers_end_with_the_same_designs_and_metrics_as_one_process(one_process, tmp_path):
  reference, config = one_process
  workers = [start_worker(tmp_path, f"w{i}") for i in range(3)]
  loop.run(external(config), str(tmp_path), log=lambda _: None)
  outs = [w.communicate(timeout=600)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), [o[-2000:] for o in outs]
  assert_same_run(reference, tmp_path)
  jobs, _ = assert_each_job_done_once(tmp_path)
  assert {j["worker_id"] for j in jobs} <= {"w0", "w1", "w2"}  # who took which is up to the race
  assert all(j["attempts"] == 1 for j in jobs)


@pytest.mark.slow
@pytest.mark.parametrize("job_kind", ["training", "check"])
def test_a_worker_sigkilled_mid_job_loses_nothing(one_process, tmp_path, job_kind):
  reference, config = one_process
  workers = {f"w{i}": start_worker(tmp_path, f"w{i}") for i in range(3)}
  killed = {}
  kind = "rung = 'check'" if job_kind == "check" else "rung != 'check'"

  def held():
    try:
      with sqlite3.connect(tmp_path / "evolution.db") as db:
        return db.execute("SELECT design_id, rung, worker_id FROM jobs WHERE state = 'claimed' "
                          f"AND {kind} ORDER BY id").fetchall()
    except sqlite3.Error:
      return []

  def kill_the_first_claimer_mid_job():
    while True:
      if (first := held()[:1]):
        # Checking or training, lease held. Short: with the session's compilation cache a smoke
        # training job is done in a few seconds on an idle machine (3 s here missed them all).
        time.sleep(0.5)
        if first[0] in held():  # (not a job that ended already: it is killed mid-job)
          killed.update(job=first[0][:2], worker=first[0][2])
          workers[first[0][2]].send_signal(signal.SIGKILL)
          return
      time.sleep(0.05)
  killer = threading.Thread(target=kill_the_first_claimer_mid_job, daemon=True)
  killer.start()
  loop.run(external(config, lease_s=6.0, heartbeat_s=1.0), str(tmp_path), log=lambda _: None)
  killer.join(timeout=60)
  assert killed, f"no {job_kind} job was still held 0.5 s after its claim: nothing was killed"
  victim = killed["worker"]
  survivors = [w for name, w in workers.items() if name != victim]
  outs = [w.communicate(timeout=600)[0] for w in survivors]
  assert all(w.returncode == 0 for w in survivors), [o[-2000:] for o in outs]
  assert workers[victim].wait() == -signal.SIGKILL
  assert_same_run(reference, tmp_path)
  jobs, events = assert_each_job_done_once(tmp_path)
  (job,) = [j for j in jobs if (j["design_id"], j["rung"]) == killed["job"]]
  assert job["attempts"] == 2 and job["worker_id"] != victim
  expired = [e["payload"] for e in events if e["kind"] == "job_expired"]
  assert expired == [{"design_id": killed["job"][0], "rung": killed["job"][1], "worker_id": victim,
                      "attempt": 1}]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_a_two_process_worker_trains_a_job_to_the_one_process_metrics(tmp_path):
  config = smoke_config(n_proposals=0)
  loop.run(config, str(tmp_path / "one"), log=lambda _: None)
  port = _free_port()
  hosts = [start_worker(tmp_path / "two", "slice", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                        f"--process_id={i}") for i in range(2)]
  loop.run(external(config), str(tmp_path / "two"), log=lambda _: None)
  outs = [h.communicate(timeout=600)[0] for h in hosts]
  assert all(h.returncode == 0 for h in hosts), [o[-2000:] for o in outs]
  assert "2 process(es), 2 device(s)" in outs[0]
  with Store.open(str(tmp_path / "one")) as one, Store.open(str(tmp_path / "two")) as two:
    ones, twos = one.verifications(), two.verifications()  # the seed at every rung (baselines)
    assert [(v["design_id"], v["rung"]) for v in ones] == [(v["design_id"], v["rung"]) for v in twos]
    assert len(ones) == len(config.ladder.rungs)
    for a, b in zip(ones, twos):
      for key in ("first_loss", "train_loss", "val_loss", "val_bpb"):
        assert abs(a["metrics"][key] - b["metrics"][key]) <= 1e-5, (a["rung"], key, a["metrics"][key],
                                                                   b["metrics"][key])
      assert a["metrics"]["params"] == b["metrics"]["params"]
      assert a["metrics"]["tokens"] == b["metrics"]["tokens"]
    assert {j["worker_id"] for j in two.jobs()} == {"slice"} and len(two.jobs()) == len(twos)


class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def store_with_job(tmp_path, clock):
  store = Store(str(tmp_path / "evolution.db"), clock=clock)
  store.add_design("d0", '{"tree": {}}', [], "seed", "gpt", "valid")
  store.enqueue("d0", "tiny")
  return store


def verifier_of(workdir, log=lambda _: None):
  from genesys_jax import jobs, resolve  # pylint: disable=g-import-not-at-top
  return jobs.Verifier(resolve.resolve(smoke_config()), str(workdir), log)


def test_a_job_that_lost_its_attempts_is_recorded_as_an_infrastructure_failure(tmp_path):
  from genesys_jax import jobs  # pylint: disable=g-import-not-at-top
  clock = Clock()
  store = store_with_job(tmp_path, clock)
  verifier = verifier_of(tmp_path)
  for dead in ("w0", "w1"):  # two workers die holding it
    job = store.claim(dead, 10)
    assert not jobs.settle_lost_job(verifier, store, dead, job, lambda _: None)  # theirs to train
    clock.now += 11
  job = store.claim("w2", 10)
  assert jobs.settle_lost_job(verifier, store, "w2", job, lambda _: None)
  ((v),) = store.verifications()
  assert v["metrics"]["val_bpb"] is None
  assert v["metrics"]["error"].startswith("InfrastructureError: 2 attempts were lost")
  assert store.design("d0")["status"] == "failed"
  assert [(j["state"], j["attempts"]) for j in store.jobs()] == [("done", 3)]
  store.close()


def test_a_checker_job_that_lost_its_attempts_rejects_the_design_as_an_infrastructure_failure(tmp_path):
  from gab.tree import Unit, design_to_json  # pylint: disable=g-import-not-at-top
  from genesys_jax import jobs, loop  # pylint: disable=g-import-not-at-top
  clock = Clock()
  store = Store(str(tmp_path / "evolution.db"), clock=clock)
  tree = Unit.make("Residual", [Unit.make("MLP")])
  store.add_design("d0", design_to_json(tree), [], "mutation", "m", "checking", {"checking": True, "proposal": 0})
  store.enqueue("d0", "check")
  lines = []
  verifier = verifier_of(tmp_path)
  for dead in ("w0", "w1"):  # two workers die holding it
    job = store.claim(dead, 10)
    assert not jobs.settle_lost_job(verifier, store, dead, job, lambda _: None)
    clock.now += 11
  job = store.claim("w2", 10)
  assert job == ("d0", "check") and jobs.settle_lost_job(verifier, store, "w2", job, lambda _: None)
  assert store.verifications() == [] and store.design("d0")["status"] == "checking"
  store.close()
  controller = loop.Controller(external(smoke_config(n_proposals=3)), str(tmp_path), lines.append)
  controller.settle_checks()  # the controller, at its barrier
  store = controller.store
  design = store.design("d0")
  assert design["status"] == "rejected" and not design["report"]["passed"]
  assert [c["name"] for c in design["report"]["checks"]] == ["infrastructure"]
  assert design["report"]["checks"][0]["message"].startswith("2 attempts to check this design were lost")
  assert not store.artifacts(kind="fingerprint")
  assert [line for line in lines if line.startswith("[")] == [
      "[1/3] d0 mutation from - (m): infrastructure: " + design["report"]["checks"][0]["message"]]
  store.close()


def test_a_rung_named_check_is_refused(tmp_path):
  from genesys_jax import validate  # pylint: disable=g-import-not-at-top
  config = smoke_config()
  config.rungs.check = config.rungs.tiny
  assert "config.rungs.check: 'check' is reserved (the job queue's name for checker jobs); rename the rung" \
      in validate.config_errors(config)


def test_a_worker_whose_lease_was_taken_over_records_nothing(tmp_path):
  from genesys_jax import record, verify  # pylint: disable=g-import-not-at-top
  clock = Clock()
  store = store_with_job(tmp_path, clock)
  job = store.claim("slow", 10)
  clock.now += 11
  assert store.claim("fast", 10) == job
  result = verify.Verification(*job, {"val_bpb": 1.0, "params": 1, "tokens": 1})
  assert not record.result(store, "slow", result, "tiny")
  assert store.verifications() == [] and store.design("d0")["status"] == "valid"
  assert record.result(store, "fast", result, "tiny")
  assert store.design("d0")["status"] == "verified"
  assert [(j["state"], j["worker_id"]) for j in store.jobs()] == [("done", "fast")]
  store.close()
