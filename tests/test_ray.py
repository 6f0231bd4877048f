"""The `ray` executor on a real local Ray cluster (a head and one extra node, 127.0.0.1 only):
the run survives losing the extra node while its worker trains, with the one-process run's designs
and metrics. (Which worker claims which job is up to the cluster; if the extra node's worker never
holds one, the test fails saying so.)"""

import os
import signal
import socket
import sqlite3
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from evolution.store import Store
from genesys_jax import loop, replay
from test_workers import assert_each_job_done_once, smoke_config

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
OVERRIDES = ["--config.evolution.n_proposals=2", "--config.jobs.generation=2", "--config.jobs.lease_s=8",
             "--config.jobs.heartbeat_s=1", "--config.jobs.poll_s=0.2"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _loopback_alias():
  """A loopback name that Ray does not rewrite (this host's name, where /etc/hosts maps it to
  127.x): given "127.0.0.1" or "localhost", Ray connects to the host's outward address instead."""
  from ray._raylet import is_localhost  # pylint: disable=g-import-not-at-top
  name = socket.gethostname()
  try:
    loopback = socket.gethostbyname(name).startswith("127.")
  except OSError:
    loopback = False
  if not loopback or is_localhost(name):
    pytest.skip(f"this host's name {name!r} is not a loopback alias, needed to keep Ray on 127.0.0.1")
  return name


def _wait_for_port(port, proc, timeout_s=300):
  deadline = time.time() + timeout_s
  while True:
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return
    assert proc.poll() is None and time.time() < deadline, "the Ray head did not start"
    time.sleep(0.5)


def _env():
  return dict(os.environ, PYTHONPATH=os.getcwd(), RAY_USAGE_STATS_ENABLED="0")


def _claimed(workdir):
  """Worker ids holding a job now."""
  try:
    with sqlite3.connect(workdir / "evolution.db") as db:
      return [r[0] for r in db.execute("SELECT worker_id FROM jobs WHERE state = 'claimed'")]
  except sqlite3.Error:
    return []


def _node_with(resource, address):
  """The (8-character) id of the node offering a custom resource, once it has joined."""
  script = ("import ray, sys, time\n"
            f"ray.init(address={address!r}, _node_ip_address='127.0.0.1', include_dashboard=False, "
            "logging_level='ERROR')\n"
            "for _ in range(600):\n"
            f"  nodes = [n for n in ray.nodes() if n['Alive'] and {resource!r} in n['Resources']]\n"
            "  if nodes:\n"
            "    print(nodes[0]['NodeID'][:8]); break\n"
            "  time.sleep(0.5)\n")
  out = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_ray_run_survives_losing_its_extra_node(tmp_path):
  port = _free_port()
  address = f"{_loopback_alias()}:{port}"
  # A short temp dir: Ray's sockets live under it and an AF_UNIX path is at most 107 bytes, which
  # pytest's tmp_path/ray/session_<date>/sockets/plasma_store exceeds (the head exits at once).
  ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
  head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                           "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
                           f"--temp-dir={ray_dir}"], env=_env(), start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  extra = None
  try:
    _wait_for_port(port, head)  # the extra node gives up if the head is not up yet
    extra = subprocess.Popen([RAY, "start", "--block", f"--address={address}", "--node-ip-address=127.0.0.1",
                              "--num-cpus=1", '--resources={"extra_node": 1}', "--disable-usage-stats"], env=_env(),
                             start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = smoke_config(n_proposals=2)
    config.jobs.generation = 2
    loop.run(config, str(tmp_path / "one"), log=lambda _: None)  # the reference, meanwhile

    workdir = tmp_path / "ray_run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke", *OVERRIDES,
         f"--workdir={workdir}", "--launch.executor=ray", "--launch.workers=2",
         f"--launch.ray_address={address}", "--launch.ray_node_ip=127.0.0.1"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    extra_node = _node_with("extra_node", address)
    deadline = time.time() + 900
    while not any(w.endswith("@" + extra_node) for w in _claimed(workdir)):  # the extra node's worker trains
      assert time.time() < deadline and launcher.poll() is None, (
          "the worker on the extra node never held a job: " + launcher.stdout.read()[-3000:])
      time.sleep(0.2)
    time.sleep(2.0)
    os.killpg(extra.pid, signal.SIGKILL)  # the extra node and everything on it
    extra.wait()
    out, _ = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, out[-3000:]
    with Store.open(str(workdir)) as store:
      result = replay.compare(str(tmp_path / "one"), store)
      assert not result["diverged"], result["first_divergence"]
      assert result["designs"] == 3
      assert store.events(kind="job_expired"), "no job was lost with the node"
    assert_each_job_done_once(workdir)
  finally:
    for proc in (extra, head):
      if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _kill_leftovers(ray_dir)
    shutil.rmtree(ray_dir, ignore_errors=True)


def _kill_leftovers(marker):
  """Ray daemons of this test's cluster that outlived their process group (their command lines
  name the test's temp dir), killed by pid."""
  for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    except OSError:
      continue
    if marker in cmdline:
      try:
        os.kill(int(pid), signal.SIGKILL)
      except OSError:
        pass
