"""Prepare a corpus once: `python -m genesys_jax.cli.prepare --config=configs/ladder.py [--workers=N]
[--verify] [--config.data.corpus=...]`.

Tokenises `config.data`'s corpus into the shard cache (`train.prepare.prepare`) and prints one JSON
line (dir, corpus, vocab, splits, parts, verified); bad input is one `error:` line and exit 2.
"""

from __future__ import annotations

import json
import sys


def main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from genesys_jax import cli  # pylint: disable=g-import-not-at-top
  from train import prepare, shards  # pylint: disable=g-import-not-at-top
  del argv
  cli.quiet_absl_logging()
  config = flags.FLAGS["config"].value
  directory = prepare.prepare(config.data, workers=flags.FLAGS["workers"].value or None, progress=True)
  manifest = shards.read_manifest(directory, full=flags.FLAGS["verify"].value)
  print(json.dumps({"dir": directory, "corpus": manifest["corpus"], "vocab": manifest["vocab"],
                    "splits": manifest["splits"], "parts": len(manifest["parts"]),
                    "verified": bool(flags.FLAGS["verify"].value)}, sort_keys=True))


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", "configs/ladder.py", "Ladder config file.")
  flags.DEFINE_integer("workers", 0, "Tokeniser processes (0: data.prepare_workers or all CPUs).")
  flags.DEFINE_bool("verify", False, "Check every file's full sha256 against the manifest.")


def _main(argv) -> None:
  try:
    main(argv)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(_main)


if __name__ == "__main__":
  run()
