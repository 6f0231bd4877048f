"""Verifier throughput and controller overhead: `python -m genesys_jax.bench_workers`.

Runs the smoke ladder with all proposals in one generation (so their jobs can run in parallel)
once per worker count in `--workers` (external verifier workers on this machine, one CPU device
each), and prints one JSON line per run: verifications per hour, and the controller's own time per
proposal (proposing, checking, recording, enqueueing: its wall time minus its waits for workers)
as a fraction of a worker's time per verification (claim to recorded result).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts to compare.")
_PROPOSALS = flags.DEFINE_integer("proposals", 4, "Proposals (one generation).")


def smoke_config(proposals: int):
  spec = importlib.util.spec_from_file_location("ladder", os.path.join("configs", "ladder.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.evolution.n_proposals = proposals
  config.jobs.generation = proposals
  config.jobs.in_process = False
  config.jobs.poll_s = 0.2
  return config


def bench(n_workers: int, proposals: int, root: str) -> dict:
  from evolution.store import Store  # pylint: disable=g-import-not-at-top
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(root, f"workers_{n_workers}")
  env = dict(os.environ, PYTHONPATH=os.getcwd(), XLA_FLAGS="--xla_force_host_platform_device_count=1")
  workers = [subprocess.Popen([sys.executable, "-m", "genesys_jax.worker", f"--workdir={workdir}",
                               f"--worker_id=w{i}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(n_workers)]
  evo = loop.Evolution(smoke_config(proposals), workdir, log=lambda _: None)
  t0 = time.perf_counter()
  try:
    evo.run()
  finally:
    evo.store.close()
  wall = time.perf_counter() - t0
  job_s = []
  for w in workers:
    out, _ = w.communicate(timeout=1800)
    job_s += [float(x) for x in re.findall(r"done in ([0-9.]+) s", out)]
  with Store.open(workdir) as store:
    n_verifications = len(store.verifications())
  controller_s = wall - getattr(evo, "waited_s", 0.0)
  per_job = sum(job_s) / max(len(job_s), 1)
  return {"workers": n_workers, "proposals": proposals, "verifications": n_verifications,
          "wall_s": round(wall, 1), "verifications_per_hour": round(n_verifications / wall * 3600, 1),
          "worker_s_per_verification": round(per_job, 2),
          "controller_s_per_proposal": round(controller_s / (proposals + 1), 2),
          "controller_fraction_of_worker_time": round(controller_s / (proposals + 1) / per_job, 3)}


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as root:
    for n in _WORKERS.value:
      print(json.dumps(bench(int(n), _PROPOSALS.value, root)), flush=True)


if __name__ == "__main__":
  app.run(main)
