"""`python -m genesys_jax.report --workdir=DIR`: write the run's HTML report to DIR/report/."""

from __future__ import annotations

import os
import sys

from absl import app, flags


_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (holding evolution.db).")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not os.path.exists(os.path.join(_WORKDIR.value, "evolution.db")):
    print(f"error: {_WORKDIR.value} holds no evolution.db: expected the workdir of a run",
          file=sys.stderr)
    sys.exit(2)
  from genesys_jax.report import site  # pylint: disable=g-import-not-at-top
  print(site.write(_WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
