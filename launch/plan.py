"""Launch plans as data: an experiment is a controller and N verifier workers, each a job with its
command, environment, resources and number of hosts. Executors (`launch/local.py`,
`launch/ray_executor.py`, `launch/tpu_vm.py`) only turn a plan into processes.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from typing import Sequence

import ml_collections

from gab import fields

EXECUTORS = ("local", "ray", "tpu_vm")


_S, _B = fields.string, fields.boolean


@dataclasses.dataclass(frozen=True)
class TpuConfig:
  name: str = fields.field("genesys", "name prefix of the TPU VMs", _S, results=False)
  zone: str = fields.field("us-central2-b", "the zone", _S, results=False)
  project: str = fields.field("", "the GCP project ('': gcloud's default)", _S, results=False)
  accelerator: str = fields.field("v4-32", "the accelerator type of each worker's slice", _S,
                                  results=False)
  runtime_version: str = fields.field("", "'' = the usual one for the accelerator", _S, results=False)
  repo_dir: str = fields.field("~/genesys_jax", "where the checkout goes on each host", _S, results=False)
  queued: bool = fields.field(False, "create through queued resources", _B, results=False)
  spot: bool = fields.field(False, "spot VMs", _B, results=False)


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
  """`--launch.*`: how a run is laid out on machines (none of it changes what the run computes)."""
  executor: str = fields.field("", "'': the one-process run (controller with an in-process worker); "
                               "local, ray or tpu_vm", fields.one_of("", *EXECUTORS), results=False)
  dry_run: bool = fields.field(False, "print the plan's commands instead of running them", _B,
                               results=False)
  workers: int = fields.field(1, "verifier workers (each possibly multi-host)", fields.integer(1),
                              results=False)
  worker_workdir: str = fields.field("", "workers' checkpoints and TensorBoard (e.g. gs://BUCKET/run); "
                                     "'' = --workdir", _S, results=False)
  python: str = fields.field("", "interpreter in commands; '' = this one (local, ray) or python3 "
                             "(tpu_vm)", _S, results=False)
  gpus_per_worker: int = fields.field(0, "local: CUDA_VISIBLE_DEVICES slices; ray: num_gpus of each "
                                      "worker task", fields.integer(0), results=False)
  cpus_per_worker: int = fields.field(1, "ray: num_cpus of each worker task", fields.integer(1),
                                      results=False)
  ray_address: str = fields.field("auto", "ray: the cluster to join", _S, results=False)
  ray_node_ip: str = fields.field("", "ray: this host's address in the cluster, if Ray should not "
                                  "guess it", _S, results=False)
  max_retries: int = fields.field(3, "ray: restarts of a worker task whose node died", fields.integer(0),
                                  results=False)
  tpu: TpuConfig = fields.section(TpuConfig, "tpu_vm: the slices")


def default_config() -> ml_collections.ConfigDict:
  return fields.defaults(LaunchConfig)


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  command: tuple[str, ...]
  env: tuple[tuple[str, str], ...] = ()
  cpus: int = 1
  gpus: int = 0
  hosts: int = 1  # > 1: the same command on every host of a slice, joined by jax.distributed

  def shell(self) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
    return (env + " " if env else "") + shlex.join(self.command)


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  workdir: str
  controller: Job
  workers: tuple[Job, ...]


def config_args(argv: Sequence[str]) -> list[str]:
  """The `--config=...` and `--config.X=...` flags of a command line, in order."""
  out = []
  for arg in argv:
    if arg.startswith("--config=") or arg.startswith("--config."):
      out.append(arg)
  return out


def _controller_args(config_flags: Sequence[str], workdir: str, store_url: str) -> list[str]:
  args = [a for a in config_flags if not a.startswith(("--config.jobs.in_process=", "--config.store.url="))]
  args += [f"--workdir={workdir}", "--config.jobs.in_process=False"]
  if store_url:
    args.append(f"--config.store.url={store_url}")
  return args


def build(launch: ml_collections.ConfigDict, config_flags: Sequence[str], workdir: str,
          store_url: str = "") -> Experiment:
  """The experiment for `launch` (the --launch flags): a controller and `launch.workers` workers."""
  errors = fields.errors(LaunchConfig, launch, "--launch")
  if errors:
    raise ValueError("; ".join(errors))
  python = launch.python or (sys.executable if launch.executor != "tpu_vm" else "python3")
  controller = Job("controller", (python, "-m", "genesys_jax.launch",
                                  *_controller_args(config_flags, workdir, store_url)))
  store = ["--store=" + store_url] if store_url else []
  workers = []
  for i in range(launch.workers):
    env: tuple[tuple[str, str], ...] = ()
    if launch.executor == "local" and launch.gpus_per_worker:
      first = i * launch.gpus_per_worker
      env = (("CUDA_VISIBLE_DEVICES", ",".join(str(first + g) for g in range(launch.gpus_per_worker))),)
    elif launch.executor == "local":
      env = (("CUDA_VISIBLE_DEVICES", ""),)  # CPU slots: keep workers off any GPU
    command = (python, "-m", "genesys_jax.worker", f"--workdir={launch.worker_workdir or workdir}", *store,
               f"--worker_id=worker-{i}")
    workers.append(Job(f"worker-{i}", command, env, launch.cpus_per_worker, launch.gpus_per_worker))
  return Experiment("genesys", workdir, controller, tuple(workers))


def describe(experiment: Experiment) -> list[str]:
  """One shell line per job, controller first."""
  return [f"# {job.name}\n{job.shell()}" for job in (experiment.controller, *experiment.workers)]
