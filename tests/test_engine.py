"""The training engine: sharded equivalence, multi-process, crash-resume and corrupted checkpoints.

Each case runs `python -m genesys_jax.cli.train` (or a small script) in fresh processes, since the number of
CPU devices is fixed when JAX starts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gab import seeds
from gab.tree import design_to_json

SMOKE = "configs/ladder.py:smoke"
LONG = ["--config.rungs.tiny.train_tokens=100000", "--config.train.save_every=25",
        "--config.train.max_to_keep=3"]


def env(devices: int) -> dict:
  out = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=os.getcwd())
  out.pop("JAX_PLATFORMS", None)
  return out


def train_cmd(design, workdir, *extra):
  return [sys.executable, "-m", "genesys_jax.cli.train", f"--config={SMOKE}", f"--design={design}",
          f"--workdir={workdir}", *extra]


def metrics_of(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def load_params(path) -> dict:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def design(tmp_path_factory):
  path = tmp_path_factory.mktemp("design") / "gpt.json"
  path.write_text(design_to_json(seeds.seed("gpt"), "gpt"))
  return str(path)


SHARDED_SCRIPT = r"""
import json, sys
import flax.linen as nn, jax
from configs_loader import smoke
from gab import registry, seeds
from gab.registry import MIXER, KindSpec
from gab.tree import Unit
from gab.units.base import UnitModule
from train import data, sharding, trainer

class OddMixer(UnitModule):
  '''Parameters no sharding rule names, with shapes that divide nothing.'''
  @nn.compact
  def __call__(self, x, z):
    w = self.param("odd_weights", nn.initializers.normal(0.02), (x.shape[-1], 7))
    u = self.param("odd_back", nn.initializers.normal(0.02), (7, x.shape[-1]))
    return jax.numpy.cumsum(x @ w, axis=1) @ u / x.shape[1], z

registry.register(KindSpec("OddMixer", MIXER, OddMixer))
config = smoke()
corpus = data.load_corpus(config.data)
rung = config.rungs.tiny
rung.train_tokens = 20 * rung.batch_size * config.data.seq_len
out = {}
for name, tree in [("gpt", seeds.seed("gpt")), ("odd", seeds.seed("gpt").replace((0, 0, 1), Unit.make("OddMixer")))]:
  for mesh in [(1, 1, 1), (2, 4, 1)]:
    cfg = trainer.default_train_config()
    cfg.mesh = sharding.mesh_config(*mesh)
    m, _ = trainer.train_and_evaluate(tree, rung, corpus, trainer.Run(train=cfg))
    out[f"{name}{mesh}"] = [m["first_loss"], m["train_loss"], m["val_loss"], m["steps"]]
print(json.dumps(out))
"""


def test_sharded_mesh_matches_one_device(tmp_path):
  (tmp_path / "configs_loader.py").write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('ladder', {os.path.abspath('configs/ladder.py')!r})\n"
      "ladder = importlib.util.module_from_spec(spec); spec.loader.exec_module(ladder)\n"
      "smoke = lambda: ladder.get_config('smoke')\n")
  script = tmp_path / "sharded.py"
  script.write_text(SHARDED_SCRIPT)
  e = env(8)
  e["PYTHONPATH"] = f"{tmp_path}:{os.getcwd()}"
  run = subprocess.run([sys.executable, str(script)], env=e, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  for name in ("gpt", "odd"):
    one, mesh = out[f"{name}(1, 1, 1)"], out[f"{name}(2, 4, 1)"]
    assert one[3] == mesh[3] == 20
    np.testing.assert_allclose(mesh[:3], one[:3], rtol=0, atol=1e-5)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # ~1.5 min: two JAX processes (the sharded mesh test is default)
def test_two_processes_match_one_process_with_four_devices(design, tmp_path):
  port = _free_port()
  procs = [subprocess.Popen(train_cmd(design, tmp_path / "multi", f"--coordinator=127.0.0.1:{port}",
                                      "--num_processes=2", f"--process_id={i}"),
                            env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
  single = subprocess.run(train_cmd(design, tmp_path / "single"), env=env(4), capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  multi, one = metrics_of(outs[0][0]), metrics_of(single.stdout)
  for key in ("first_loss", "train_loss", "val_loss"):
    assert abs(multi[key] - one[key]) <= 1e-5, (key, multi[key], one[key])


@pytest.fixture(scope="module")
def reference(design, tmp_path_factory):
  """An uninterrupted run, its final parameters and its checkpoints."""
  workdir = tmp_path_factory.mktemp("reference")
  run = subprocess.run(train_cmd(design, workdir, *LONG, f"--dump_params={workdir}/final.npz"),
                       env=env(1), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir, load_params(workdir / "final.npz"), metrics_of(run.stdout)


def test_sigkill_mid_training_then_resume_is_bitwise_identical(design, reference, tmp_path):
  _, final, ref_metrics = reference
  proc = subprocess.Popen(train_cmd(design, tmp_path, *LONG), env=env(1), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  checkpoints = tmp_path / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (checkpoints / "25").is_dir() or (checkpoints / "50").is_dir():
      break
    time.sleep(0.02)
  assert proc.poll() is None, "run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  assert steps and steps[-1] < ref_metrics["steps"]
  run = subprocess.run(train_cmd(design, tmp_path, *LONG, f"--dump_params={tmp_path}/final.npz"),
                       env=env(1), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  resumed = load_params(tmp_path / "final.npz")
  assert resumed.keys() == final.keys()
  for name in final:
    np.testing.assert_array_equal(resumed[name], final[name], err_msg=name)
  assert metrics_of(run.stdout)["val_loss"] == ref_metrics["val_loss"]


def test_truncated_latest_checkpoint_is_skipped_for_the_previous(design, reference, tmp_path):
  ref_dir, final, ref_metrics = reference
  subprocess.run(["cp", "-r", str(ref_dir / "checkpoints"), str(tmp_path / "checkpoints")], check=True)
  latest = tmp_path / "checkpoints" / str(ref_metrics["steps"])
  files = sorted((p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 1000),
                 key=lambda p: -p.stat().st_size)
  assert files, "no data file in the latest checkpoint"
  with open(files[0], "r+b") as f:
    f.truncate(files[0].stat().st_size // 2)
  run = subprocess.run(train_cmd(design, tmp_path, *LONG, f"--dump_params={tmp_path}/final.npz"),
                       env=env(1), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"checkpoint step {ref_metrics['steps']}" in run.stderr and "unreadable" in run.stderr
  # One warning line, not the ~30 asyncio "Task exception was never retrieved" tracebacks that the
  # failed reads leave behind (train/checkpoint.py holds them back).
  assert "Task exception was never retrieved" not in run.stderr, run.stderr[-3000:]
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  resumed = load_params(tmp_path / "final.npz")
  for name in final:
    np.testing.assert_array_equal(resumed[name], final[name], err_msg=name)
