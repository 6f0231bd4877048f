"""Verifier throughput and controller overhead: `python -m genesys_jax.cli.bench_workers`.

Runs the smoke ladder with all proposals in one generation (so their jobs can run in parallel)
once per worker count in `--workers` (external verifier workers on this machine, one CPU device
each), and prints one JSON line per run: verifications per hour, and the controller's own time (its
wall time minus its waits for workers: proposing, recording, enqueueing, applying the checks the
workers made; with `--nocheck_in_workers`, also checking each proposal) as a fraction
of a worker's time per verification (claim to recorded result). The controller's time is given
twice per proposal: `controller_s_per_proposal_with_start` spreads its one-off start over the
proposals (imports in the first run of this process, the corpus, the seeds' checks and recording:
everything before the first proposal, `controller_start_s`), `controller_s_per_proposal_after_start`
counts only what it spends from the first proposal on (what grows with the run).
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

_DONE = re.compile(r"@(\S+) done in ([0-9.]+) s")


def smoke_config(proposals: int, check_in_workers: bool = True):
  spec = importlib.util.spec_from_file_location("ladder", os.path.join("configs", "ladder.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.evolution.n_proposals = proposals
  config.jobs.generation = proposals
  config.jobs.in_process = False
  config.jobs.poll_s = 0.2
  config.jobs.check_in_workers = check_in_workers
  return config


def _mean(xs: list[float]) -> float:
  return sum(xs) / max(len(xs), 1)


def bench(n_workers: int, proposals: int, root: str, check_in_workers: bool = True) -> dict:
  t_start = time.perf_counter()  # the controller's start: imports (if not yet paid), corpus, seeds
  from evolution.store import CHECK_JOB, Store  # pylint: disable=g-import-not-at-top
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(root, f"workers_{n_workers}")
  env = dict(os.environ, PYTHONPATH=os.getcwd(), XLA_FLAGS="--xla_force_host_platform_device_count=1")
  workers = [subprocess.Popen([sys.executable, "-m", "genesys_jax.worker", f"--workdir={workdir}",
                               f"--worker_id=w{i}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(n_workers)]
  controller = loop.Controller(smoke_config(proposals, check_in_workers), workdir, log=lambda _: None)
  t0 = time.perf_counter()
  try:
    controller.run()
  finally:
    controller.store.close()
  t_end = time.perf_counter()
  wall = t_end - t0
  job_s: dict[str, list[float]] = {"verification": [], "check": []}
  for w in workers:
    out, _ = w.communicate(timeout=1800)
    for rung, seconds in _DONE.findall(out):
      job_s["check" if rung == CHECK_JOB else "verification"].append(float(seconds))
  with Store.open(workdir) as store:
    n_verifications = len(store.verifications())
  waited = controller.waited_s
  controller_s = t_end - t_start - waited
  started, waited_at_start = controller.proposing_since or (t_end, waited)
  start_s = started - t_start - waited_at_start
  per_job = _mean(job_s["verification"])
  with_start = controller_s / max(proposals, 1)
  after_start = (controller_s - start_s) / max(proposals, 1)
  return {"workers": n_workers, "proposals": proposals, "check_in_workers": check_in_workers,
          "verifications": n_verifications, "checks_by_workers": len(job_s["check"]),
          "wall_s": round(wall, 1), "verifications_per_hour": round(n_verifications / wall * 3600, 1),
          "worker_s_per_verification": round(per_job, 2),
          "worker_s_per_check": round(_mean(job_s["check"]), 2) if job_s["check"] else None,
          "controller_s": round(controller_s, 2), "controller_start_s": round(start_s, 2),
          "controller_s_per_proposal_with_start": round(with_start, 2),
          "controller_s_per_proposal_after_start": round(after_start, 3),
          "controller_fraction_of_worker_time_with_start": round(with_start / per_job, 3) if per_job else None,
          "controller_fraction_of_worker_time_after_start": round(after_start / per_job, 4) if per_job else None}


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  with tempfile.TemporaryDirectory() as root:
    for n in f.workers:
      print(json.dumps(bench(int(n), f.proposals, root, f.check_in_workers)), flush=True)


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_list("workers", ["1", "2"], "Worker counts to compare.")
  flags.DEFINE_integer("proposals", 4, "Proposals (one generation).")
  flags.DEFINE_bool("check_in_workers", True, "Workers check the proposals (jobs.check_in_workers); "
                    "False: the controller does.")


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
