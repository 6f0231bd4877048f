"""The `ray` executor: verifier workers as Ray tasks on an existing Ray cluster.

The controller runs here (the Ray driver's host); each worker is a Ray task asking for
`--launch.cpus_per_worker` CPUs and `--launch.gpus_per_worker` GPUs, which runs the worker's command
(the nodes need this checkout at the same path and a store they can all reach: PostgreSQL for
several hosts). A task whose node dies is retried elsewhere (`--launch.max_retries`), and the job
it held is taken over by any worker once its lease runs out; so the run survives losing a node.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

from launch.plan import Experiment

GRACE_S = 120.0


def _die_with_parent():
  """In the child: SIGKILL when the Ray worker that started it dies (Linux prctl)."""
  ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run_worker(command: list[str], env: dict[str, str], cwd: str) -> int:
  import ray  # pylint: disable=g-import-not-at-top
  node = ray.get_runtime_context().get_node_id()[:8]
  command = [f"{a}@{node}" if a.startswith("--worker_id=") else a for a in command]  # name its node
  proc = subprocess.run(command, env=dict(os.environ, **env), cwd=cwd, preexec_fn=_die_with_parent,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}")
  return proc.returncode


def run(experiment: Experiment, launch, log=print) -> int:
  import ray  # pylint: disable=g-import-not-at-top
  path = os.pathsep.join([os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
  ray.init(address=launch.ray_address, _node_ip_address=launch.ray_node_ip or None,
           include_dashboard=False, log_to_driver=False,
           logging_level="WARNING", runtime_env={"env_vars": {"PYTHONPATH": path}})
  task = ray.remote(max_retries=launch.max_retries, retry_exceptions=True)(_run_worker)
  cwd = os.getcwd()
  refs = [task.options(num_cpus=job.cpus, num_gpus=job.gpus, name=job.name).remote(
      list(job.command), dict(job.env), cwd) for job in experiment.workers]
  log(f"ray: {len(refs)} worker task(s) on {launch.ray_address}; controller here")
  logs = os.path.join(experiment.workdir, "logs")
  os.makedirs(logs, exist_ok=True)
  with open(os.path.join(logs, "controller.log"), "ab") as out:
    controller = subprocess.run(list(experiment.controller.command), stdout=out, stderr=subprocess.STDOUT,
                                check=False)
  deadline = time.monotonic() + (GRACE_S if controller.returncode == 0 else 0)
  pending = refs
  while pending and time.monotonic() < deadline:
    _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
  for ref in pending:
    ray.cancel(ref, force=True)
  log(f"ray: controller exited with {controller.returncode}")
  ray.shutdown()
  return controller.returncode
