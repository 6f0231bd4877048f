"""Run a Genesys evolution: `python -m genesys_jax.launch --config=configs/ladder.py --workdir=DIR`.

Every config field can be overridden on the command line (`--config.evolution.n_proposals=4`);
running again with the same `--workdir` resumes the run instead of restarting it (a config that
changes what its results mean is refused there: genesys_jax/resume.py), and Ctrl-C or SIGTERM ends it
with one line and exit code 130 (genesys_jax/interrupt.py).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch import plan as launch_plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/ladder.py[:smoke].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (store, checkpoints, config).")
flags.mark_flags_as_required(["config", "workdir"])
# --launch.executor=local|ray|tpu_vm [--launch.workers=N] [--launch.dry_run]: a controller and
# verifier workers (launch/); without it, today's one-process run.
_LAUNCH = config_flags.DEFINE_config_dict("launch", launch_plan.default_config())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from genesys_jax import cli_errors  # pylint: disable=g-import-not-at-top  (light)
  config = cli_errors.config_or_exit(_CONFIG, "config")
  cli_errors.validate_or_exit(config)
  if _LAUNCH.value.executor:
    from launch import cli  # pylint: disable=g-import-not-at-top
    try:
      sys.exit(cli.main(_LAUNCH.value, config, sys.argv, _WORKDIR.value))
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  cli_errors.lock_free_or_exit(_WORKDIR.value)  # fail fast; the run takes the lock for itself
  from genesys_jax import interrupt  # pylint: disable=g-import-not-at-top  (light)
  with interrupt.exits_cleanly():  # Ctrl-C, SIGTERM: one line, exit 130
    from genesys_jax import loop  # pylint: disable=g-import-not-at-top
    with cli_errors.one_line_errors():
      loop.run(config, _WORKDIR.value)


def parse_flags(argv):
  """absl's parser, with config errors (unknown field, wrong type) as one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    from genesys_jax import cli_errors  # pylint: disable=g-import-not-at-top  (light)
    try:
      config = _CONFIG.value
    except Exception:  # noqa: BLE001 - not parsed or not loadable: no hint
      config = None
    print(f"error: {cli_errors.unknown_flag(e.flagname, config)}", file=sys.stderr)
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    detail = f"{lines[0]} {lines[-1]}" if "Traceback" in str(e) else " ".join(lines)
    print(f"error: {detail}", file=sys.stderr)
  except AttributeError as e:
    from genesys_jax import cli_errors  # pylint: disable=g-import-not-at-top  (light)
    print(f"error: {cli_errors.unknown_field(e, argv)}", file=sys.stderr)
  except (KeyError, TypeError, ValueError) as e:
    print(f"error: bad config override: {e}", file=sys.stderr)
  sys.exit(2)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
