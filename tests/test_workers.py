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


def assert_same_run(reference, workdir):
  with Store.open(str(workdir)) as store:
    result = replay.compare(str(reference), store)
    assert not result["diverged"], result["first_divergence"]
    with Store.open(str(reference)) as ref:
      assert result["designs"] == len(ref.designs()) == len(store.designs())
      assert len(store.verifications()) == len(ref.verifications())


def assert_each_job_done_once(workdir):
  with Store.open(str(workdir)) as store:
    jobs = store.jobs()
    assert jobs and {j["state"] for j in jobs} == {"done"}
    done = [(e["payload"]["design_id"], e["payload"]["rung"]) for e in store.events(kind="job_completed")]
    assert sorted(done) == sorted((j["design_id"], j["rung"]) for j in jobs)
    added = store.events(kind="verification_added")
    assert len(added) == len(jobs) and not any(e["payload"]["replaced"] for e in added)
    return store.jobs(), store.events()


def test_a_verifier_worker_trains_the_controllers_jobs_like_the_one_process_run(tmp_path):
  config = smoke_config(n_proposals=0)
  config.rungs.tiny.train_tokens = 2048
  config.rungs.tiny.eval_batches = 1
  loop.run(config, str(tmp_path / "one"), log=lambda _: None)
  worker = start_worker(tmp_path / "two", "w0")  # before the controller: it waits for the run
  lines = []
  loop.run(external(config), str(tmp_path / "two"), log=lines.append)
  out, _ = worker.communicate(timeout=300)
  assert worker.returncode == 0, out[-3000:]
  # Two jobs: the GPT seed at the lowest rung, then as the baseline at the second rung.
  assert "worker w0: 2 job(s) done; exiting" in out
  assert any("waiting for verifier workers: 1 of 1 job(s) open" in line for line in lines)
  assert_same_run(tmp_path / "one", tmp_path / "two")
  jobs, _ = assert_each_job_done_once(tmp_path / "two")
  assert [(j["worker_id"], j["attempts"]) for j in jobs] == [("w0", 1)] * 2
  with Store.open(str(tmp_path / "one")) as store:  # the one-process run used its in-process worker
    assert [j["worker_id"].split("@")[0] for j in store.jobs()] == ["in-process"] * 2
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
def test_a_worker_sigkilled_mid_training_loses_nothing(one_process, tmp_path):
  reference, config = one_process
  workers = {f"w{i}": start_worker(tmp_path, f"w{i}") for i in range(3)}
  killed = {}

  def kill_the_first_claimer_mid_training():
    while True:
      try:
        with sqlite3.connect(tmp_path / "evolution.db") as db:
          held = db.execute("SELECT design_id, rung, worker_id FROM jobs WHERE state = 'claimed'").fetchone()
      except sqlite3.Error:
        held = None
      if held:
        time.sleep(3.0)  # compiling or training, lease held
        killed.update(job=held[:2], worker=held[2])
        workers[held[2]].send_signal(signal.SIGKILL)
        return
      time.sleep(0.05)
  killer = threading.Thread(target=kill_the_first_claimer_mid_training, daemon=True)
  killer.start()
  loop.run(external(config, lease_s=6.0, heartbeat_s=1.0), str(tmp_path), log=lambda _: None)
  killer.join(timeout=60)
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
    (a,), (b,) = one.verifications(), two.verifications()
    assert a["design_id"] == b["design_id"] and a["rung"] == b["rung"]
    for key in ("first_loss", "train_loss", "val_loss", "val_bpb"):
      assert abs(a["metrics"][key] - b["metrics"][key]) <= 1e-5, (key, a["metrics"][key], b["metrics"][key])
    assert a["metrics"]["params"] == b["metrics"]["params"] and a["metrics"]["tokens"] == b["metrics"]["tokens"]
    assert [j["worker_id"] for j in two.jobs()] == ["slice"]


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


def test_a_job_that_lost_its_attempts_is_recorded_as_an_infrastructure_failure(tmp_path):
  from genesys_jax import jobs  # pylint: disable=g-import-not-at-top
  clock = Clock()
  store = store_with_job(tmp_path, clock)
  verifier = jobs.make_verifier(smoke_config(), str(tmp_path), store, lambda _: None)
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


def test_a_worker_whose_lease_was_taken_over_records_nothing(tmp_path):
  from genesys_jax import jobs  # pylint: disable=g-import-not-at-top
  clock = Clock()
  store = store_with_job(tmp_path, clock)
  job = store.claim("slow", 10)
  clock.now += 11
  assert store.claim("fast", 10) == job
  recorder = jobs.JobRecorder(store, "slow", job)
  with pytest.raises(jobs.LeaseLost):
    with recorder.transaction():
      recorder.add_verification("d0", "tiny", {"val_bpb": 1.0, "params": 1, "tokens": 1})
      recorder.set_status("d0", "verified")
  assert store.verifications() == [] and store.design("d0")["status"] == "valid"
  recorder = jobs.JobRecorder(store, "fast", job)
  with recorder.transaction():
    recorder.add_verification("d0", "tiny", {"val_bpb": 1.0, "params": 1, "tokens": 1})
    recorder.set_status("d0", "verified")
  assert recorder.recorded and store.design("d0")["status"] == "verified"
  assert [(j["state"], j["worker_id"]) for j in store.jobs()] == [("done", "fast")]
  store.close()
