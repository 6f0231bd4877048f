"""Launch plans and executors: exact commands of the dry run (tpu_vm on v5e-16 and v4-32, local)."""

import shlex

import ml_collections
import pytest

from launch import cli, plan, tpu_vm

STORE = "postgresql://genesys@10.128.0.5:5432/genesys"
ARGV = ["genesys_jax/launch.py", "--config=configs/ladder.py:paper", "--config.seed=3",
        "--workdir=runs/paper", "--launch.executor=tpu_vm", "--launch.dry_run"]

V5E_16 = """\
# 1 verifier worker(s), each a v5e-16 slice (v5litepod-16: 4 host(s), 16 chips), runtime v2-alpha-tpuv5-lite
# pack this checkout for the slices
tar czf /tmp/genesys_jax.tgz --exclude=.git --exclude=.venv --exclude=runs .
# worker-0: create the slice genesys-worker-0
gcloud compute tpus queued-resources create genesys-worker-0 --node-id=genesys-worker-0 --zone=us-west4-a --project=my-project --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot
# wait until `gcloud compute tpus queued-resources describe genesys-worker-0 --zone=us-west4-a --project=my-project` shows state ACTIVE
# worker-0: copy the checkout to every host and install it
gcloud compute tpus tpu-vm scp /tmp/genesys_jax.tgz genesys-worker-0:/tmp/genesys_jax.tgz --zone=us-west4-a --project=my-project --worker=all
gcloud compute tpus tpu-vm ssh genesys-worker-0 --zone=us-west4-a --project=my-project --worker=all --command 'mkdir -p ~/genesys_jax && tar xzf /tmp/genesys_jax.tgz -C ~/genesys_jax && cd ~/genesys_jax && python3 -m pip install -q -e . "jax[tpu]"'
# worker-0: start the worker on all 4 host(s) (jax.distributed joins them)
gcloud compute tpus tpu-vm ssh genesys-worker-0 --zone=us-west4-a --project=my-project --worker=all --command 'cd ~/genesys_jax && nohup python3 -m genesys_jax.worker --workdir=gs://my-bucket/run1 --store=postgresql://genesys@10.128.0.5:5432/genesys --coordinator=auto --worker_id=genesys-worker-0 > worker.log 2>&1 &'
# the controller, here: proposes, checks and records; the slices verify
python3 -m genesys_jax.launch --config=configs/ladder.py:paper --config.seed=3 --workdir=runs/paper --config.jobs.in_process=False --config.store.url=postgresql://genesys@10.128.0.5:5432/genesys
# when the run is done, delete the slices
gcloud compute tpus queued-resources delete genesys-worker-0 --zone=us-west4-a --project=my-project --force --quiet"""

V4_32 = """\
# 2 verifier worker(s), each a v4-32 slice (v4-32: 4 host(s), 16 chips), runtime tpu-ubuntu2204-base
# pack this checkout for the slices
tar czf /tmp/genesys_jax.tgz --exclude=.git --exclude=.venv --exclude=runs .
# worker-0: create the slice genesys-worker-0
gcloud compute tpus tpu-vm create genesys-worker-0 --zone=us-central2-b --accelerator-type=v4-32 --version=tpu-ubuntu2204-base
# worker-0: copy the checkout to every host and install it
gcloud compute tpus tpu-vm scp /tmp/genesys_jax.tgz genesys-worker-0:/tmp/genesys_jax.tgz --zone=us-central2-b --worker=all
gcloud compute tpus tpu-vm ssh genesys-worker-0 --zone=us-central2-b --worker=all --command 'mkdir -p ~/genesys_jax && tar xzf /tmp/genesys_jax.tgz -C ~/genesys_jax && cd ~/genesys_jax && python3 -m pip install -q -e . "jax[tpu]"'
# worker-0: start the worker on all 4 host(s) (jax.distributed joins them)
gcloud compute tpus tpu-vm ssh genesys-worker-0 --zone=us-central2-b --worker=all --command 'cd ~/genesys_jax && nohup python3 -m genesys_jax.worker --workdir=gs://my-bucket/run1 --store=postgresql://genesys@10.128.0.5:5432/genesys --coordinator=auto --worker_id=genesys-worker-0 > worker.log 2>&1 &'
# worker-1: create the slice genesys-worker-1
gcloud compute tpus tpu-vm create genesys-worker-1 --zone=us-central2-b --accelerator-type=v4-32 --version=tpu-ubuntu2204-base
# worker-1: copy the checkout to every host and install it
gcloud compute tpus tpu-vm scp /tmp/genesys_jax.tgz genesys-worker-1:/tmp/genesys_jax.tgz --zone=us-central2-b --worker=all
gcloud compute tpus tpu-vm ssh genesys-worker-1 --zone=us-central2-b --worker=all --command 'mkdir -p ~/genesys_jax && tar xzf /tmp/genesys_jax.tgz -C ~/genesys_jax && cd ~/genesys_jax && python3 -m pip install -q -e . "jax[tpu]"'
# worker-1: start the worker on all 4 host(s) (jax.distributed joins them)
gcloud compute tpus tpu-vm ssh genesys-worker-1 --zone=us-central2-b --worker=all --command 'cd ~/genesys_jax && nohup python3 -m genesys_jax.worker --workdir=gs://my-bucket/run1 --store=postgresql://genesys@10.128.0.5:5432/genesys --coordinator=auto --worker_id=genesys-worker-1 > worker.log 2>&1 &'
# the controller, here: proposes, checks and records; the slices verify
python3 -m genesys_jax.launch --config=configs/ladder.py:paper --config.seed=3 --workdir=runs/paper --config.jobs.in_process=False --config.store.url=postgresql://genesys@10.128.0.5:5432/genesys
# when the run is done, delete the slices
gcloud compute tpus tpu-vm delete genesys-worker-0 --zone=us-central2-b --quiet
gcloud compute tpus tpu-vm delete genesys-worker-1 --zone=us-central2-b --quiet"""


def launch_config(**overrides):
  cfg = plan.default_config()
  tpu = overrides.pop("tpu", {})
  cfg.update(overrides)
  cfg.tpu.update(tpu)
  return cfg


def run_config(url=STORE):
  return ml_collections.ConfigDict(dict(store=dict(url=url)))


def dry_run(capsys, launch, argv=ARGV, url=STORE, workdir="runs/paper"):
  assert cli.main(launch, run_config(url), argv, workdir) == 0
  return capsys.readouterr().out.rstrip("\n")


@pytest.mark.parametrize("launch,expected", [
    (dict(executor="tpu_vm", dry_run=True, worker_workdir="gs://my-bucket/run1", tpu=dict(accelerator="v5e-16", zone="us-west4-a",
                                                    project="my-project", queued=True, spot=True)), V5E_16),
    (dict(executor="tpu_vm", dry_run=True, workers=2, worker_workdir="gs://my-bucket/run1",
          tpu=dict(accelerator="v4-32")), V4_32),
])
def test_tpu_vm_dry_run_prints_the_exact_commands(capsys, launch, expected):
  out = dry_run(capsys, launch_config(**launch))
  assert out == expected
  for line in out.splitlines():  # every command is one well-formed shell line
    if not line.startswith("#"):
      words = shlex.split(line)
      if "--command" in words:
        assert shlex.split(words[words.index("--command") + 1])


def test_tpu_vm_refuses_a_store_the_slices_cannot_share(capsys):
  with pytest.raises(ValueError, match="needs a PostgreSQL store.*SQLite cannot be shared"):
    dry_run(capsys, launch_config(executor="tpu_vm", dry_run=True), url="")
  with pytest.raises(ValueError, match="accelerator='v9-8': expected one of v4-8"):
    dry_run(capsys, launch_config(executor="tpu_vm", dry_run=True, tpu=dict(accelerator="v9-8")))


def test_local_dry_run_gives_each_worker_its_gpus(capsys):
  argv = ["launch.py", "--config=configs/ladder.py", "--config.jobs.in_process=True", "--workdir=runs/a"]
  out = dry_run(capsys, launch_config(executor="local", dry_run=True, workers=2, gpus_per_worker=2,
                                      python="python"), argv, url="", workdir="runs/a")
  assert out == """\
# executor local: 2 worker(s)
# controller
python -m genesys_jax.launch --config=configs/ladder.py --workdir=runs/a --config.jobs.in_process=False
# worker-0
CUDA_VISIBLE_DEVICES=0,1 python -m genesys_jax.worker --workdir=runs/a --worker_id=worker-0
# worker-1
CUDA_VISIBLE_DEVICES=2,3 python -m genesys_jax.worker --workdir=runs/a --worker_id=worker-1"""


def test_bad_launch_values_are_refused(capsys):
  with pytest.raises(ValueError, match="--launch.executor = 'k8s': expected one of '', 'local', 'ray', 'tpu_vm'"):
    dry_run(capsys, launch_config(executor="k8s"))
  with pytest.raises(ValueError, match="--launch.workers = 0: expected an integer >= 1"):
    dry_run(capsys, launch_config(executor="local", workers=0))


@pytest.mark.slow
def test_local_executor_runs_a_controller_and_two_workers_to_the_end(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from evolution.store import Store  # pylint: disable=g-import-not-at-top
  run = subprocess.run([sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke",
                        "--config.evolution.n_proposals=1", "--config.jobs.poll_s=0.2",
                        f"--workdir={tmp_path}", "--launch.executor=local", "--launch.workers=2"],
                       env=dict(os.environ, PYTHONPATH=os.getcwd()), capture_output=True, text=True,
                       timeout=1200)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
  assert "local: controller exited with 0; workers worker-0: 0, worker-1: 0" in run.stdout
  assert {p.name for p in (tmp_path / "logs").iterdir()} == {"controller.log", "worker-0.log", "worker-1.log"}
  with Store.open(str(tmp_path)) as store:
    jobs = store.jobs()
    assert jobs and {j["state"] for j in jobs} == {"done"}
    assert {j["worker_id"] for j in jobs} <= {"worker-0", "worker-1"}
    assert store.get_meta("run_finished") is True
