"""XManager-style launchers: an experiment is data (`launch.plan`), executors turn it into processes.

`python -m genesys_jax.launch --config=configs/ladder.py --workdir=DIR --launch.executor=local
--launch.workers=3` runs the controller and 3 verifier workers on this machine; `ray` places the
workers on a Ray cluster; `tpu_vm` gives the gcloud commands for a TPU pod slice;
`--launch.dry_run` prints the plan's exact commands for any executor instead of running them.
"""
