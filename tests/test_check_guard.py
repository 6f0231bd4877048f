"""A check that kills the loop's process (as an XLA segfault would) is retried once, then failed."""

import json
import os
import signal
import subprocess
import sys
import textwrap

from evolution.store import Store

# Runs the loop on WORKDIR with one seed, a design file whose unit SIGKILLs its own process when it
# is traced at the causality check's short probe length (37): the check that traces the design's
# programs (init) dies as a crash would.
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import flax.linen as nn
    from gab import registry, seeds
    from gab.tree import Unit, design_to_json
    from gab.units.base import UnitModule
    from genesys_jax import loop
    from configs import ladder

    class DiesAt37(UnitModule):
      @nn.compact
      def __call__(self, x, z):
        if x.shape[1] == 37:
          os.kill(os.getpid(), signal.SIGKILL)
        return self.dense(x.shape[-1], "proj", out=True)(x), z

    registry.register(registry.KindSpec("DiesAt37", registry.CHANNEL, DiesAt37))
    workdir = sys.argv[1]
    design = os.path.join(os.path.dirname(workdir), "dies.json")
    tree = seeds.seed("gpt").replace((1, 0, 1), Unit.make("DiesAt37"))
    with open(design, "w") as f:
      f.write(design_to_json(tree, "dies"))
    config = ladder.get_config("smoke")
    config.seeds = (design,)
    config.evolution.n_proposals = 0
    config.report = False
    loop.run(config, workdir)
""")


def test_a_check_that_kills_the_process_is_retried_once_then_failed(tmp_path):
  workdir = tmp_path / "run"
  env = {**os.environ, "PYTHONPATH": os.getcwd()}

  def launch():
    return subprocess.run([sys.executable, "-c", SCRIPT, str(workdir)], env=env, capture_output=True,
                          text=True, timeout=600)
  first, second = launch(), launch()
  assert first.returncode == second.returncode == -signal.SIGKILL, (first.stderr[-2000:], second.stderr[-2000:])
  note = json.loads((workdir / "checking.json").read_text())
  assert note["check"] == "init" and note["deaths"] == 1
  assert "(init) killed the last run" in second.stdout
  third = launch()
  assert third.returncode == 0, third.stderr[-2000:]
  assert not (workdir / "checking.json").exists()
  with Store.open(str(workdir)) as store:
    (design,) = store.designs()
    assert design["status"] == "rejected"
    (check,) = design["report"]["checks"]
    assert check["name"] == "init" and check["status"] == "fail"
    assert "killed the process that ran it 2 times" in check["message"]
