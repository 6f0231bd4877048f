"""The `tpu_vm` executor: the gcloud commands that run verifier workers on TPU pod slices.

Each worker is one slice (`--launch.tpu.name`-I): created (directly, or as a queued resource with
`--launch.tpu.queued`), given a copy of this checkout, and started on every host at once
(`--worker=all`); the hosts of a slice join with `jax.distributed` (`--coordinator=auto`: on TPU VMs
JAX finds its peers itself) and train each claimed job sharded over the whole slice. The controller
runs where this command runs. The store must be PostgreSQL, reachable from the slices (SQLite
cannot be shared by hosts), and the workdir should be shared (e.g. a gs:// bucket or a mount) for
retried jobs to resume from the lost worker's checkpoints.
"""

from __future__ import annotations

import shlex
import subprocess

from launch.plan import Experiment

# --launch.tpu.accelerator -> (gcloud accelerator type, default runtime version, hosts, chips)
ACCELERATORS = {
    "v4-8": ("v4-8", "tpu-ubuntu2204-base", 1, 4),
    "v4-16": ("v4-16", "tpu-ubuntu2204-base", 2, 8),
    "v4-32": ("v4-32", "tpu-ubuntu2204-base", 4, 16),
    "v4-64": ("v4-64", "tpu-ubuntu2204-base", 8, 32),
    "v5e-8": ("v5litepod-8", "v2-alpha-tpuv5-lite", 1, 8),
    "v5e-16": ("v5litepod-16", "v2-alpha-tpuv5-lite", 4, 16),
    "v5e-32": ("v5litepod-32", "v2-alpha-tpuv5-lite", 8, 32),
    "v5e-64": ("v5litepod-64", "v2-alpha-tpuv5-lite", 16, 64),
    "v5p-8": ("v5p-8", "v2-alpha-tpuv5", 1, 4),
    "v5p-16": ("v5p-16", "v2-alpha-tpuv5", 2, 8),
}
ARCHIVE = "/tmp/genesys_jax.tgz"


def _accelerator(tpu) -> tuple[str, str, int, int]:
  if tpu.accelerator not in ACCELERATORS:
    raise ValueError(f"--launch.tpu.accelerator={tpu.accelerator!r}: expected one of "
                     f"{', '.join(ACCELERATORS)}")
  kind, runtime, hosts, chips = ACCELERATORS[tpu.accelerator]
  return kind, tpu.runtime_version or runtime, hosts, chips


def commands(experiment: Experiment, launch) -> list[str]:
  """The shell commands, in order, with a comment line before each step."""
  tpu = launch.tpu
  kind, runtime, hosts, chips = _accelerator(tpu)
  store = [a for a in experiment.workers[0].command if a.startswith("--store=")]
  if not store or not store[0][len("--store="):].startswith(("postgresql://", "postgres://")):
    raise ValueError("--launch.executor=tpu_vm needs a PostgreSQL store reachable from the slices: "
                     "--config.store.url=postgresql://USER@HOST/DB (SQLite cannot be shared by hosts)")
  where = [f"--zone={tpu.zone}"] + ([f"--project={tpu.project}"] if tpu.project else [])
  spot = ["--spot"] if tpu.spot else []
  lines = [f"# {len(experiment.workers)} verifier worker(s), each a {tpu.accelerator} slice "
           f"({kind}: {hosts} host(s), {chips} chips), runtime {runtime}",
           "# pack this checkout for the slices",
           f"tar czf {ARCHIVE} --exclude=.git --exclude=.venv --exclude=runs ."]
  for job in experiment.workers:
    name = f"{tpu.name}-{job.name}"
    lines.append(f"# {job.name}: create the slice {name}")
    if tpu.queued:
      lines.append(shlex.join(["gcloud", "compute", "tpus", "queued-resources", "create", name,
                               f"--node-id={name}", *where, f"--accelerator-type={kind}",
                               f"--runtime-version={runtime}", *spot]))
      lines.append(f"# wait until `gcloud compute tpus queued-resources describe {name} "
                   f"{' '.join(where)}` shows state ACTIVE")
    else:
      lines.append(shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "create", name, *where,
                               f"--accelerator-type={kind}", f"--version={runtime}", *spot]))
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, *where, "--worker=all"]
    lines.append(f"# {job.name}: copy the checkout to every host and install it")
    lines.append(shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "scp", ARCHIVE, f"{name}:{ARCHIVE}",
                             *where, "--worker=all"]))
    install = (f"mkdir -p {tpu.repo_dir} && tar xzf {ARCHIVE} -C {tpu.repo_dir} && cd {tpu.repo_dir} "
               f'&& python3 -m pip install -q -e . "jax[tpu]"')
    lines.append(shlex.join([*ssh, "--command", install]))
    args = [a for a in job.command if not a.startswith("--worker_id=")]
    worker = shlex.join([*args, "--coordinator=auto", f"--worker_id={name}"])
    start = f"cd {tpu.repo_dir} && nohup {worker} > worker.log 2>&1 &"
    lines.append(f"# {job.name}: start the worker on all {hosts} host(s) (jax.distributed joins them)")
    lines.append(shlex.join([*ssh, "--command", start]))
  lines.append("# the controller, here: proposes, checks and records; the slices verify")
  lines.append(experiment.controller.shell())
  lines.append("# when the run is done, delete the slices")
  for job in experiment.workers:
    name = f"{tpu.name}-{job.name}"
    if tpu.queued:
      lines.append(shlex.join(["gcloud", "compute", "tpus", "queued-resources", "delete", name, *where,
                               "--force", "--quiet"]))
    else:
      lines.append(shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "delete", name, *where, "--quiet"]))
  return lines


def run(experiment: Experiment, launch, log=print) -> int:
  """Run the commands in order (needs gcloud, logged in, and a project with TPU quota)."""
  for line in commands(experiment, launch):
    if line.startswith("#"):
      log(line)
      continue
    log(f"$ {line}")
    code = subprocess.run(line, shell=True, check=False).returncode
    if code:
      log(f"tpu_vm: command failed with exit code {code}")
      return code
  return 0
