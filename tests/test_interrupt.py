"""Ctrl-C and SIGTERM in a check and in training: one line, exit code 130, and a rerun that ends as
an uninterrupted run does (genesys_jax/interrupt.py), on real launch processes."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ladder_config, set_fields
from evolution.store import Store
from gab import seeds
from genesys_jax import check_guard, loop, replay

# One rung, the GPT seed alone, long enough to interrupt between its periodic checkpoints.
SHORT = {"evolution.n_proposals": 0, "ladder.rungs": ("tiny",), "rungs.tiny.train_tokens": 300_000,
         "train.save_every": 100}
RESUME = "; run the same command to resume"


class Launch:
  """`python -m genesys_jax.launch` in a session of its own (as a shell runs a job), its output
  lines collected as they come."""

  def __init__(self, workdir, overrides):
    args = [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}" for k, v in overrides.items()]
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke", *args,
         f"--workdir={workdir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    self.out, self.err = [], []
    self.readers = [threading.Thread(target=self._read, args=(f, lines), daemon=True)
                    for f, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
    for t in self.readers:
      t.start()

  def _read(self, f, lines):
    for line in f:
      lines.append(line.rstrip("\n"))

  def wait_for(self, ready, timeout=300):
    deadline = time.time() + timeout
    while not ready():
      assert self.proc.poll() is None, f"ended before the moment came: {self.out[-5:]} {self.err[-5:]}"
      assert time.time() < deadline, "the moment never came"
      time.sleep(0.02)

  def end(self, timeout=600) -> int:
    code = self.proc.wait(timeout)
    for t in self.readers:
      t.join()
    return code


def in_check(workdir, design=None):
  """Whether a check of `design` (any) is running: check_guard's note names it and its check."""
  try:
    note = json.loads((workdir / check_guard.NOTE).read_text())
  except (OSError, ValueError):
    return False
  return bool(note.get("check")) and design in (None, note.get("design"))


def checkpointed(workdir, step):
  return any(p.name == str(step) for p in (workdir / "checkpoints").glob("*/*/*"))


def reference(tmp_path, name, overrides):
  workdir = tmp_path / name
  loop.run(set_fields(ladder_config("smoke"), overrides), str(workdir), log=lambda _: None)
  return workdir


SWALLOWED = """
import gc, os, signal, time
from genesys_jax import interrupt
def collecting(phase, info):  # a garbage collector callback, as JAX has one
  if phase == "start" and not fired:
    fired.append(1)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)  # the handler runs here, inside the callback, where Python swallows its exception
fired = []
with interrupt.exits_cleanly():
  interrupt.at("a collection")
  gc.callbacks.append(collecting)
  gc.collect()
  for _ in range(100):
    time.sleep(0.01)
  print("not interrupted")
"""


def test_an_interrupt_raised_where_python_swallows_exceptions_is_raised_again():
  out = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()))
  assert (out.returncode, out.stdout, out.stderr) == (130, "", f"interrupted at a collection{RESUME}\n")


def test_an_interrupt_in_a_check_and_in_training_is_one_line_and_the_rerun_ends_as_if_none(tmp_path):
  uninterrupted = reference(tmp_path, "reference", SHORT)  # (and the corpus prepared: no notice below)
  workdir = tmp_path / "run"
  first = Launch(workdir, SHORT)  # Ctrl-C (SIGINT to the whole session) in the seed's check
  first.wait_for(lambda: in_check(workdir))
  os.killpg(first.proc.pid, signal.SIGINT)
  assert first.end() == 130
  assert first.err == [f"interrupted at the check of seed gpt{RESUME}"], first.err
  assert not any("Traceback" in line for line in first.out)
  assert not (workdir / check_guard.NOTE).exists()  # an interrupt is not a death of the check
  with Store.open(str(workdir)) as store:
    assert store.designs() == []

  second = Launch(workdir, SHORT)  # SIGTERM to the process, as `kill` does, in its training
  second.wait_for(lambda: checkpointed(workdir, 100))
  second.proc.send_signal(signal.SIGTERM)
  assert second.end() == 130
  (line,) = second.err
  gpt = seeds.seed("gpt").content_hash()
  step = int(re.fullmatch(rf"interrupted at the training of {gpt} at rung tiny \(it resumes from its "
                          rf"checkpoint at step (\d+)\){RESUME}", line).group(1))
  assert step >= 100 and step % 100 == 0

  third = Launch(workdir, SHORT)
  assert third.end() == 0, third.err[-5:]
  assert third.err == [] and third.out[-1] == f"report: {workdir / 'report' / 'index.html'}"
  with Store.open(str(workdir)) as store:
    (v,) = store.verifications()
    assert v["metrics"]["resumed_from_step"] == step  # from the checkpoint, not from step 0
    result = replay.compare(str(uninterrupted), store)
  assert not result["diverged"] and result["designs"] == 1, result["first_divergence"]


@pytest.mark.slow  # three launch processes of the smoke run and its reference (~3-4 min on 2 cores)
def test_ctrl_c_in_a_proposals_check_and_training_of_the_smoke_run(smoke_run, tmp_path):
  workdir, gpt = tmp_path / "run", seeds.seed("gpt").content_hash()
  first = Launch(workdir, {})
  first.wait_for(lambda: in_check(workdir) and not in_check(workdir, gpt))
  os.killpg(first.proc.pid, signal.SIGINT)
  assert first.end() == 130
  (line,) = first.err
  assert re.fullmatch(rf"interrupted at proposal 1/3 \(the check of [0-9a-f]{{16}}\){RESUME}", line), line

  second = Launch(workdir, {})
  second.wait_for(lambda: any(re.match(r"  training (?!" + gpt + r")\w+ at rung tiny", x) for x in second.out))
  os.killpg(second.proc.pid, signal.SIGINT)
  assert second.end() == 130, (second.out[-8:], second.err[-8:])
  (line,) = second.err
  assert re.fullmatch(rf"interrupted at the training of [0-9a-f]{{16}} at rung tiny \(it .*\){RESUME}", line), line

  third = Launch(workdir, {})
  assert third.end() == 0, third.err[-5:]
  with Store.open(str(workdir)) as store:
    result = replay.compare(str(smoke_run[0]), store)
  assert not result["diverged"] and result["designs"] == 4, result["first_divergence"]
