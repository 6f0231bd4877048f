"""Export a run's evolution tree, or one design as a standalone package.

  python -m genesys_jax.cli.export --workdir=DIR [--out=PATH_PREFIX]
  python -m genesys_jax.cli.export --workdir=DIR --design=ID [--rung=R] [--out=PKG_DIR]

Without --design: writes PATH_PREFIX.json and
PATH_PREFIX.graphml (default DIR/evolution_tree.*) with `evolution.export.export`. With --design:
writes the package of that design (default DIR/export/design_ID; `genesys_jax.export_design`): its
Flax model, config and trained parameters, loadable with only jax and flax. Prints one line; a
missing workdir, store or design is a one-line error and exit status 2.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from evolution import export  # pylint: disable=g-import-not-at-top
  from evolution.store import StoreError  # pylint: disable=g-import-not-at-top
  from genesys_jax import cli  # pylint: disable=g-import-not-at-top
  del argv
  cli.quiet_absl_logging()
  f = flags.FLAGS
  try:
    if f.design:
      from genesys_jax import export_design  # pylint: disable=g-import-not-at-top
      out = export_design.export(f.workdir, f.design, f.rung, f.out)
      print(f"design {f.design} -> {out} (a package: with {os.path.dirname(out)} on sys.path, "
            f"import {os.path.basename(out)}; see its model.py)")
      return 0
    if f.rung:
      raise ValueError("--rung is for --design: which rung's size and parameters to export")
    json_path, graphml_path, tree = export.export(f.workdir, f.out)
  except (FileNotFoundError, StoreError, KeyError, ValueError) as e:
    print(f"error: {str(e).strip(chr(34) + chr(39))}", file=sys.stderr)
    return 2
  print(f"{len(tree['nodes'])} designs, {len(tree['edges'])} edges -> {json_path}, {graphml_path}")
  return 0


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "An evolution run's workdir (holding evolution.db).")
  flags.DEFINE_string("design", None, "Export this design as a standalone package instead of "
                      "the whole tree.")
  flags.DEFINE_string("rung", None, "With --design: the rung whose size and trained parameters "
                      "are exported (default: the highest where it has a result).")
  flags.DEFINE_string("out", None, "Path prefix for the .json and .graphml files (default "
                      "WORKDIR/evolution_tree); with --design, the package folder (default "
                      "WORKDIR/export/design_ID).")
  flags.mark_flag_as_required("workdir")


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
