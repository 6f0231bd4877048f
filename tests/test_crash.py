"""A loop killed with SIGKILL at random moments ends like an uninterrupted run with the same seed.

One kind of moment is left out by design: a second kill during the check of the same design. The
loop's process cannot tell an outside SIGKILL from a check that crashed it (a segfault in XLA, the
OOM killer), so `genesys_jax.check_guard` tries such a check once more and then records the design
as failing it (tests/test_check_guard.py). A kill that would be that second death is postponed
until the check has ended."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from evolution.store import Store
from genesys_jax import check_guard, replay

ARGS = ["--config=configs/ladder.py:smoke", "--config.evolution.n_proposals=5"]


def launch(workdir):
  return subprocess.Popen([sys.executable, "-m", "genesys_jax.launch", *ARGS, f"--workdir={workdir}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))


def _guard_would_fail_the_design(workdir) -> bool:
  """Whether a kill now would be a repeated death of one design's check (see the docstring)."""
  try:
    note = json.loads((workdir / check_guard.NOTE).read_text())
  except (OSError, ValueError):
    return False
  return isinstance(note, dict) and int(note.get("deaths", 0)) >= check_guard.RETRIES


@pytest.mark.slow
def test_loop_killed_five_times_ends_like_an_uninterrupted_run(tmp_path):
  reference = launch(tmp_path / "reference")
  assert reference.wait(timeout=900) == 0, reference.stderr.read()[-3000:]

  rng = np.random.default_rng(0)
  kills = 0
  while kills < 5:
    proc = launch(tmp_path / "crashy")
    deadline = time.time() + rng.uniform(3.0, 20.0)
    while proc.poll() is None and (time.time() < deadline
                                   or _guard_would_fail_the_design(tmp_path / "crashy")):
      time.sleep(0.05)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills += 1
    else:
      assert proc.returncode == 0, proc.stderr.read()[-3000:]
      break  # finished before the kill: restarting again would only replay a finished run
  final = launch(tmp_path / "crashy")
  assert final.wait(timeout=900) == 0, final.stderr.read()[-3000:]
  assert kills >= 5
  with Store.open(str(tmp_path / "crashy")) as store:
    result = replay.compare(str(tmp_path / "reference"), store)
    n_designs = len(store.designs())
  assert not result["diverged"], result["first_divergence"]
  assert result["designs"] == n_designs == 6
