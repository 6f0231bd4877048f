"""Check one design: `python -m genesys_jax.cli.check --design=FILE.json [--rung=NAME] [--config=F]`.

Prints one JSON object {"passed", "checks":
[{"name", "status", "message", "hint"}], "sizing"} and exits 0 (passed), 1 (failed) or 2 (unusable
input: a design file or config that does not load, an unknown rung, an invalid config field).

The config, configs/ladder.py by default, is read only when --config or --rung is given, and
resolved once (`genesys_jax.resolve`): the check scale is `config.checker` with the data's
vocabulary size, and `--rung` picks `config.rungs[NAME]` with seq_len `config.data.seq_len` and the
compute dtype `config.train.dtype`. Without a config the checker uses its built-in defaults. A
design with code units is checked in the sandbox (`gab.sandbox.check_design`), never in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_LADDER = os.path.join(ROOT, "configs", "ladder.py")


def load_config(path: str):
  """`get_config()` of the config file at `path`."""
  spec = importlib.util.spec_from_file_location("ladder_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def resolved(config, rung_name: str | None):
  """(checker config, rung) for the checker from a ladder config; (None, None) without one."""
  from genesys_jax import cli_errors, resolve  # pylint: disable=g-import-not-at-top
  if config is None:
    return None, None
  with cli_errors.one_line_errors():
    config = resolve.resolve(config)
  return config.checker, (resolve.check_rung(config, rung_name) if rung_name else None)


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from gab import checker, codeunits  # pylint: disable=g-import-not-at-top
  from gab.tree import DesignError, design_to_json  # pylint: disable=g-import-not-at-top
  from genesys_jax import cli, cli_errors  # pylint: disable=g-import-not-at-top
  del argv
  cli.quiet_absl_logging()
  FLAGS = flags.FLAGS  # noqa: N806
  try:
    tree, name, units = codeunits.read_design_file(FLAGS.design)
  except DesignError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  config = cli_errors.config_or_exit(FLAGS["config"], "config") if FLAGS.config is not None else None
  if config is None and FLAGS.rung:
    config = load_config(DEFAULT_LADDER)
  if config is not None:
    cli_errors.validate_or_exit(config, rungs=[FLAGS.rung] if FLAGS.rung else [])
  if FLAGS.rung and FLAGS.rung not in config.rungs:
    print(f"error: unknown rung {FLAGS.rung!r}; valid rungs: {', '.join(config.rungs)}",
          file=sys.stderr)
    return 2
  cfg, rung = resolved(config, FLAGS.rung)
  if units:  # code units run only in the sandbox (gab.sandbox), never in this process
    from gab import sandbox  # pylint: disable=g-import-not-at-top
    report = sandbox.check_design(design_to_json(tree, name, units), cfg, rung)
    print(json.dumps(report, sort_keys=True))
    return 0 if report["passed"] else 1
  report = checker.check(tree, cfg, rung)
  print(report.to_json(), flush=True)
  if any("did not finish within its timeout" in c.message for c in report.checks):
    os._exit(1)  # a computation that hangs cannot be joined: leave without waiting for it
  return 0 if report.passed else 1


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("design", None, "Design JSON file to check (as written by gab.seeds).")
  flags.DEFINE_string("rung", None, "Check at config.rungs[RUNG] (default: a small built-in rung).")
  config_flags.DEFINE_config_file("config", None, f"Ladder config file (default {DEFAULT_LADDER}, "
                                  "read when --rung is given).")
  flags.mark_flag_as_required("design")


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
