"""A verifier worker: `python -m genesys_jax.worker --workdir=DIR` (or `--store=URL`).

Claims the oldest pending (design, rung) job of a run, trains it with the loop's own verify stage
(heartbeats renew its lease while it trains), or, for a checker job (rung "check"), checks the
design as the controller would have (`check.examine`), records the result and takes the next
(`jobs.run_job`); it exits once the controller has finished the run and no job is open
(`--exit_when_idle`, the default). The
run's resolved config comes from the store (the controller publishes it) or `WORKDIR/config.json`.
Checkpoints and TensorBoard events go under `--workdir` (a shared path lets a retried job resume
where a lost worker stopped; a local one retrains it from the start, with the same result).

Multi-host verification (a TPU pod slice, or 2 CPU processes in the tests): start one worker per
host with `--coordinator=HOST:PORT --num_processes=N --process_id=I` (on Cloud TPU VMs
`--coordinator=auto` lets jax.distributed find its peers); process 0 claims, heartbeats and
records; every process trains the job in step, sharded over all hosts' devices (a checker job is
run by process 0 alone).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (SQLite store unless --store; "
                               "checkpoints). Default with --store: ./genesys_worker.")
_STORE = flags.DEFINE_string("store", None, "Store URL, e.g. postgresql://USER@HOST/DB.")
_WORKER_ID = flags.DEFINE_string("worker_id", None, "Name in the job table (default HOST-PID).")
_EXIT_WHEN_IDLE = flags.DEFINE_bool("exit_when_idle", True, "Exit once the run is finished and no "
                                    "job is open; otherwise wait for more work forever.")
_MAX_JOBS = flags.DEFINE_integer("max_jobs", 0, "Exit after this many jobs (0: no limit).")
_WAIT_S = flags.DEFINE_float("wait_s", 600.0, "How long to wait for the store and the run's config.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 for a multi-host "
                                   "worker, or 'auto' (Cloud TPU / SLURM: jax.distributed finds it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes of a multi-host worker.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.")

_MESSAGE_BYTES = 1024


def log(line: str) -> None:
  print(line, flush=True)


def _wait_for(what: str, get, wait_s: float, poll_s: float = 0.5):
  deadline = time.monotonic() + wait_s
  while True:
    try:
      value = get()
    except Exception as e:  # pylint: disable=broad-except  (not there yet: the controller starts later)
      value, error = None, e
    else:
      error = None
    if value is not None:
      return value
    if time.monotonic() > deadline:
      raise TimeoutError(f"waited {wait_s:.0f} s for {what}" + (f": {error}" if error else ""))
    time.sleep(poll_s)


def load_config(store, workdir: str):
  """The run's resolved config: the store's latest `config` artifact, else WORKDIR/config.json."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  published = store.artifacts(kind="config")
  if published:
    return ml_collections.ConfigDict(json.loads(published[-1]["content"]))
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  return None


def run_finished(store) -> bool:
  open_jobs = [j for j in store.jobs() if j["state"] != "done"]
  return bool(store.get_meta("run_finished")) and not open_jobs


def _broadcast(text: str) -> str:
  """Process 0's `text` on every process of a multi-host worker."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  buf = np.zeros(_MESSAGE_BYTES, np.uint8)
  data = text.encode()[:_MESSAGE_BYTES]
  buf[:len(data)] = np.frombuffer(data, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return bytes(out).rstrip(b"\0").decode()


def serve(url: str, workdir: str, worker_id: str, exit_when_idle: bool = True, max_jobs: int = 0,
          wait_s: float = 600.0) -> int:
  """Claim, train and record jobs until the run is finished; returns the number of jobs done."""
  import jax  # pylint: disable=g-import-not-at-top
  from evolution import store_url  # pylint: disable=g-import-not-at-top
  from genesys_jax import jobs, resolve  # pylint: disable=g-import-not-at-top
  lead, multihost = jax.process_index() == 0, jax.process_count() > 1
  say = log if lead else (lambda line: None)
  store = _wait_for("the store", lambda: store_url.open_store(url, workdir), wait_s)
  config = _wait_for("the run's config (start the controller)", lambda: load_config(store, workdir), wait_s)
  cfg = config.jobs
  verifier = jobs.Verifier(resolve.resolve(config), workdir, lambda line: say(f"[{worker_id}] {line}"))
  say(f"worker {worker_id} on {store.path} ({jax.process_count()} process(es), "
      f"{jax.device_count()} device(s))")
  done = 0
  while not max_jobs or done < max_jobs:
    message = "idle"
    if lead:
      job = store.claim(worker_id, cfg.lease_s)
      if job is not None and jobs.settle_lost_job(verifier, store, worker_id, job, verifier.log):
        message = "settled"  # recorded as an infrastructure failure: nothing to train
      elif job is not None:
        message = json.dumps(job)
      elif exit_when_idle and run_finished(store):
        message = "stop"
    if multihost:
      message = _broadcast(message)
    if message == "stop":
      break
    if message in ("idle", "settled"):
      time.sleep(cfg.poll_s if message == "idle" else 0)
      continue
    job = tuple(json.loads(message))
    say(f"worker {worker_id}: claimed {job[0]}@{job[1]}")
    t0 = time.perf_counter()
    jobs.run_job(verifier, store, url, worker_id, job, verifier.log, writes=lead)
    say(f"worker {worker_id}: {job[0]}@{job[1]} done in {time.perf_counter() - t0:.2f} s")
    done += 1
  say(f"worker {worker_id}: {done} job(s) done; exiting")
  store.close()
  return done


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if not _WORKDIR.value and not _STORE.value:
    print("error: give --workdir=DIR (the run's workdir) or --store=URL", file=sys.stderr)
    sys.exit(2)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # release a held job, then exit
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value == "auto":
    jax.distributed.initialize()
  elif _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from evolution.store import StoreError  # pylint: disable=g-import-not-at-top
  worker_id = _WORKER_ID.value or f"{socket.gethostname()}-{os.getpid()}"
  try:
    serve(_STORE.value or "", _WORKDIR.value or "genesys_worker", worker_id, _EXIT_WHEN_IDLE.value,
          _MAX_JOBS.value, _WAIT_S.value)
  except (StoreError, TimeoutError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if any(t.name == "gab-check" and t.is_alive() for t in threading.enumerate()):
    # A check that ran past checker.timeout_s left its XLA computation running in a daemon thread
    # (gab/checks/timeout.py); the interpreter's shutdown under it can die with a fatal error. Every
    # job is recorded and the store closed: leave without waiting for it (as genesys_jax.cli.check).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # pylint: disable=protected-access


def run():
  app.run(main)


if __name__ == "__main__":
  run()
