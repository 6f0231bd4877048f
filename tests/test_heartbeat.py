"""A worker's heartbeat after the worker itself recorded the job is not a lost lease.

Seen in the default launch under load: the in-process worker recorded its job, the loop refreshed
the report (seconds), the heartbeat thread woke before it was stopped, found the job no longer
claimed and took the process down as if another worker had taken the job over."""

import threading
import time

import ml_collections

from evolution.store import Store
from gab import seeds
from gab.tree import design_to_json
from genesys_jax import jobs

CFG = ml_collections.ConfigDict(dict(lease_s=300.0, heartbeat_s=0.05))


def _store_with_a_claimed_job(workdir):
  store = Store.open(str(workdir))
  tree = seeds.seed("gpt")
  store.add_design(tree.content_hash(), design_to_json(tree, "gpt"), [], "seed", "gpt", "valid", {})
  store.enqueue(tree.content_hash(), "tiny")
  assert store.claim("w1", CFG.lease_s) == (tree.content_hash(), "tiny")
  return store, (tree.content_hash(), "tiny")


def _beat_for_a_while(workdir, job, lost):
  with jobs.Heartbeat("", str(workdir), "w1", job, CFG, log=lambda _: None, on_lost=lost.set):
    time.sleep(0.5)  # ten heartbeats


def test_heartbeat_after_the_worker_recorded_its_own_job_is_quiet(tmp_path):
  store, job = _store_with_a_claimed_job(tmp_path)
  assert store.complete(*job, "w1", {"val_bpb": 3.0, "params": 1, "tokens": 1})
  lost = threading.Event()
  _beat_for_a_while(tmp_path, job, lost)
  assert not lost.is_set()
  store.close()


def test_heartbeat_of_a_job_another_worker_took_over_reports_the_loss(tmp_path):
  store, job = _store_with_a_claimed_job(tmp_path)
  store._db.execute("UPDATE jobs SET worker_id = 'w2' WHERE design_id = ?", (job[0],))  # w2's claim
  store._db.commit()
  lost = threading.Event()
  _beat_for_a_while(tmp_path, job, lost)
  assert lost.is_set()
  store.close()
