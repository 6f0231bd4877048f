"""One controller per workdir: a second launch refuses in one line naming the holder; stale locks
of dead processes are taken over; two real launches never both run (slow)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from evolution.store import Store
from genesys_jax import runlock
from genesys_jax.runlock import LockedError, RunLock

HOLD = ("import sys, time; from genesys_jax import runlock; lock = runlock.RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(600)")


def env():
  return dict(os.environ, PYTHONPATH=os.getcwd())


def holder(workdir):
  """A light process (no JAX) that holds the workdir's lock until killed."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE,
                          text=True, env=env())
  assert proc.stdout.readline().strip() == "held"
  return proc


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_held_lock_refuses_a_second_holder_naming_host_and_pid(tmp_path):
  proc = holder(tmp_path)
  try:
    with pytest.raises(LockedError) as e:
      RunLock(str(tmp_path)).acquire()
    message = str(e.value)
    assert f"pid {proc.pid} on host {socket.gethostname()}" in message and "\n" not in message
    assert runlock.read_holder(str(tmp_path))["pid"] == proc.pid
  finally:
    proc.kill()
    proc.wait()
  # The kernel dropped the dead holder's lock; its line is stale and is taken over.
  lines = []
  with runlock.hold(str(tmp_path), log=lines.append) as lock:
    assert lock.took_over["pid"] == proc.pid
    assert runlock.read_holder(str(tmp_path))["pid"] == os.getpid()
    assert lines and f"pid {proc.pid}" in lines[0] and "no longer running" in lines[0]
  assert runlock.read_holder(str(tmp_path)) is None  # a clean exit leaves no holder line
  with RunLock(str(tmp_path)) as again:  # and the next run takes it without a word
    assert again.held and again.took_over is None


def test_a_lock_file_with_garbage_is_taken_over(tmp_path):
  (tmp_path / runlock.LOCK_FILE).write_bytes(b"\xff\x00 not json")
  with RunLock(str(tmp_path)) as lock:
    assert lock.took_over is None
    assert json.loads((tmp_path / runlock.LOCK_FILE).read_text())["role"] == "controller"


def test_a_second_launch_exits_2_naming_the_holder_and_writes_nothing(tmp_path):
  proc = holder(tmp_path)
  try:
    run = subprocess.run([sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke",
                          f"--workdir={tmp_path}"], capture_output=True, text=True, env=env(), timeout=300)
  finally:
    proc.kill()
    proc.wait()
  assert run.returncode == 2, run.stderr[-3000:]
  errors = error_lines(run.stderr)
  assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
  assert f"pid {proc.pid} on host {socket.gethostname()}" in errors[0]
  assert sorted(os.listdir(tmp_path)) == [runlock.LOCK_FILE]  # no config.json, no evolution.db


@pytest.mark.slow
def test_two_concurrent_launches_one_refuses_and_the_store_has_no_duplicates(tmp_path):
  cmd = [sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke",
         "--config.evolution.n_proposals=1", f"--workdir={tmp_path}"]
  first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
  deadline = time.time() + 300
  while runlock.read_holder(str(tmp_path)) is None and time.time() < deadline:
    time.sleep(0.2)
  second = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
  assert first.wait(timeout=1800) == 0, first.stderr.read()[-3000:]
  assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr[-3000:]
  with Store.open(str(tmp_path)) as store:
    fingerprints = [a["design_id"] for a in store.artifacts(kind="fingerprint")]
    assert len(fingerprints) == len(set(fingerprints))
    assert store.events(kind="schema_migrated") == []
    added = [e["payload"]["id"] for e in store.events(kind="design_added")]
    assert len(added) == len(set(added)) == len(store.designs())
  third = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=1800)
  assert third.returncode == 0, third.stderr[-3000:]  # after the first ended, the lock is free


def test_killed_holder_lets_the_next_run_in(tmp_path):
  proc = holder(tmp_path)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  with RunLock(str(tmp_path)) as lock:
    assert lock.took_over["pid"] == proc.pid
