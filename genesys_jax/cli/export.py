"""Export a run's evolution tree: `python -m genesys_jax.cli.export --workdir=DIR [--out=PATH_PREFIX]`.

Writes PATH_PREFIX.json and PATH_PREFIX.graphml (default
DIR/evolution_tree.*) with `evolution.export.export` and prints one line; a missing workdir or store
is a one-line error and exit status 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from evolution import export  # pylint: disable=g-import-not-at-top
  from evolution.store import StoreError  # pylint: disable=g-import-not-at-top
  del argv
  try:
    json_path, graphml_path, tree = export.export(flags.FLAGS.workdir, flags.FLAGS.out)
  except (FileNotFoundError, StoreError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{len(tree['nodes'])} designs, {len(tree['edges'])} edges -> {json_path}, {graphml_path}")
  return 0


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "An evolution run's workdir (holding evolution.db).")
  flags.DEFINE_string("out", None, "Path prefix for the .json and .graphml files "
                      "(default WORKDIR/evolution_tree).")
  flags.mark_flag_as_required("workdir")


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
