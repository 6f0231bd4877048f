"""`genesys_jax.launch --launch.executor=...`: build the plan and run it, or print it (--launch.dry_run)."""

from __future__ import annotations

import sys

from launch import plan


def main(launch, config, argv, workdir: str, log=print) -> int:
  store_url = config.store.url if "store" in config else ""
  experiment = plan.build(launch, plan.config_args(argv), workdir, store_url)
  if launch.executor == "tpu_vm":
    from launch import tpu_vm  # pylint: disable=g-import-not-at-top
    if launch.dry_run:
      print("\n".join(tpu_vm.commands(experiment, launch)))
      return 0
    return tpu_vm.run(experiment, launch, log)
  if launch.dry_run:
    print(f"# executor {launch.executor}: {len(experiment.workers)} worker(s)")
    print("\n".join(plan.describe(experiment)))
    return 0
  if launch.executor == "local":
    from launch import local  # pylint: disable=g-import-not-at-top
    return local.run(experiment, log)
  from launch import ray_executor  # pylint: disable=g-import-not-at-top
  return ray_executor.run(experiment, launch, log)


def exit_with(code: int) -> None:
  sys.exit(code)
