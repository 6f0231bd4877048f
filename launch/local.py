"""The `local` executor: the controller and every worker as processes on this machine.

Each process's output goes to WORKDIR/logs/NAME.log. The workers exit by themselves once the
controller has finished the run (it marks the run so in the store); any still running a grace
period after the controller exits get SIGTERM (a worker releases a held job on SIGTERM). A worker
that dies is restarted; the job it held is taken over once its lease runs out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from launch.plan import Experiment, Job

GRACE_S = 120.0
MAX_RESTARTS = 3  # per worker: one that keeps failing (e.g. bad input, exit 2) is left down


def _start(job: Job, logs: str) -> subprocess.Popen:
  log = open(os.path.join(logs, f"{job.name}.log"), "ab")  # pylint: disable=consider-using-with
  env = dict(os.environ, **dict(job.env))
  return subprocess.Popen(list(job.command), env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)


def run(experiment: Experiment, log=print, restart_workers: bool = True) -> int:
  """Run the experiment to the end; the controller's exit code."""
  logs = os.path.join(experiment.workdir, "logs")
  os.makedirs(logs, exist_ok=True)
  controller = _start(experiment.controller, logs)
  workers = {job.name: (job, _start(job, logs)) for job in experiment.workers}
  restarts = {name: 0 for name in workers}
  log(f"local: controller pid {controller.pid}, " +
      ", ".join(f"{name} pid {p.pid}" for name, (_, p) in workers.items()) + f"; logs in {logs}")
  try:
    while controller.poll() is None:
      for name, (job, proc) in list(workers.items()):
        if proc.poll() not in (None, 0) and restart_workers and restarts[name] < MAX_RESTARTS:
          restarts[name] += 1
          log(f"local: {name} exited with {proc.returncode}; restarting it ({restarts[name]}/{MAX_RESTARTS})")
          workers[name] = (job, _start(job, logs))
      time.sleep(0.5)
    deadline = time.monotonic() + (GRACE_S if controller.returncode == 0 else 0)
    while time.monotonic() < deadline and any(p.poll() is None for _, p in workers.values()):
      time.sleep(0.5)
  finally:
    for _, proc in workers.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    for _, proc in workers.values():
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
    if controller.poll() is None:
      controller.send_signal(signal.SIGTERM)
      controller.wait()
  log(f"local: controller exited with {controller.returncode}; workers "
      + ", ".join(f"{name}: {p.returncode}" for name, (_, p) in workers.items()))
  return controller.returncode
