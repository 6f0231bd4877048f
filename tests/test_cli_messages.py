"""One clear line for a config field given as a flag, and for the score command's missing flags."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(*argv):
  return subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_a_config_field_as_a_flag_and_the_score_commands_missing_flags(tmp_path):
  procs = {  # started together: each is mostly start-up
      "field": _start("genesys_jax.launch", "--config=configs/ladder.py", f"--workdir={tmp_path / 'a'}",
                      "--n_proposals=20"),
      "unknown": _start("genesys_jax.launch", "--config=configs/ladder.py",
                        f"--workdir={tmp_path / 'b'}", "--bogus=1"),
      "score": _start("genesys_jax.score", f"--workdir={tmp_path}"),
  }
  out = {name: (p.wait(timeout=600), p.communicate()[1].splitlines()) for name, p in procs.items()}
  assert out["field"] == (2, ["error: unknown flag --n_proposals: config fields are set as "
                              "--config.evolution.n_proposals=VALUE"])
  assert out["unknown"] == (2, ["error: unknown flag --bogus"])
  rc, lines = out["score"]
  assert rc == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: missing required flags --design, --rung, --tasks (usage: ")
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
