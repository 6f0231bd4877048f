"""Run a Genesys evolution: `python -m genesys_jax.launch --config=configs/ladder.py --workdir=DIR`.

Every config field can be overridden on the command line (`--config.evolution.n_proposals=4`);
running again with the same `--workdir` resumes the run instead of restarting it.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/ladder.py[:smoke].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (store, checkpoints, config).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top  (heavy: jax, tf, seqio)
  from gab.tree import DesignError  # pylint: disable=g-import-not-at-top
  try:
    loop.run(_CONFIG.value, _WORKDIR.value)
  except (DesignError, ValueError, FileNotFoundError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
