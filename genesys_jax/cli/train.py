"""Train one design on one rung: `python -m genesys_jax.cli.train --design=FILE.json --rung=tiny --workdir=DIR`.

The verifier's job outside the loop: for a quick
experiment, for multi-host runs (one process per host, joined with `--coordinator=HOST:PORT
--num_processes=N --process_id=I`), and for the tests of sharding and resume. Runs again on the same
`--workdir` resume from its latest good checkpoint. Prints one JSON line of metrics on process 0.
The config is resolved once (`genesys_jax.resolve`: the rung's seq_len, the checker's vocabulary
size) and handed to `train.trainer` / `train.sandboxed` as plain values.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", "configs/ladder.py", "Ladder config file.")
  flags.DEFINE_string("design", None, "Design JSON file (as written by gab.seeds).")
  flags.DEFINE_string("rung", None, "Rung name in the config; default: the lowest rung.")
  flags.DEFINE_string("workdir", None, "Checkpoints and TensorBoard events go here.")
  flags.DEFINE_integer("stop_after", None, "Stop after this many steps (resume later).")
  flags.DEFINE_string("dump_params", None, "Write the final parameters to this .npz file.")
  flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-process runs.")
  flags.DEFINE_integer("num_processes", 1, "Number of processes.")
  flags.DEFINE_integer("process_id", 0, "This process's index.")
  flags.mark_flags_as_required(["design", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.coordinator:
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  from gab import codeunits  # pylint: disable=g-import-not-at-top
  from gab.tree import DesignError  # pylint: disable=g-import-not-at-top
  from genesys_jax import cli_errors, resolve  # pylint: disable=g-import-not-at-top

  config = cli_errors.config_or_exit(FLAGS["config"], "config")
  rung_name = FLAGS.rung or config.ladder.rungs[0]
  if rung_name not in config.rungs:
    print(f"error: unknown rung {rung_name!r}; the config has {sorted(config.rungs)}", file=sys.stderr)
    sys.exit(2)
  try:
    tree, _, units = codeunits.read_design_file(FLAGS.design)
    has_code_units = bool(units)
  except DesignError as e:
    cli_errors.fail(str(e))
  cli_errors.validate_or_exit(config, rungs=[rung_name])
  with cli_errors.one_line_errors():
    config = resolve.resolve(config)  # the rung's seq_len, the checker's vocab_size
  if has_code_units:
    return _train_sandboxed(config, rung_name)
  from train import data as data_lib, trainer  # pylint: disable=g-import-not-at-top
  with cli_errors.one_line_errors():
    corpus = data_lib.load_corpus(config.data)
    metrics, state = trainer.train_and_evaluate(tree, config.rungs[rung_name], corpus, trainer.Run(
        seed=config.seed, train=config.train, checkpoint_dir=os.path.join(FLAGS.workdir, "checkpoints"),
        log_dir=os.path.join(FLAGS.workdir, "tensorboard"), desc=rung_name, stop_after=FLAGS.stop_after))
  if FLAGS.dump_params:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    params = multihost_utils.process_allgather(state.params, tiled=True)
    if jax.process_index() == 0:
      flat = jax.tree_util.tree_flatten_with_path(params)[0]
      np.savez(FLAGS.dump_params, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in flat})
  if jax.process_index() == 0:
    print(json.dumps(metrics, sort_keys=True), flush=True)


def _train_sandboxed(config, rung_name):
  """A design with code units trains in gab.sandbox (no secrets, no network; `train.sandboxed`): its
  code never runs in this process. --dump_params and multi-process runs are not available for it."""
  from gab import sandbox  # pylint: disable=g-import-not-at-top
  from train import sandboxed  # pylint: disable=g-import-not-at-top
  if FLAGS.dump_params or FLAGS.coordinator:
    print("error: --dump_params and --coordinator are not available for designs with code units",
          file=sys.stderr)
    sys.exit(2)
  from gab.tree import design_from_json  # pylint: disable=g-import-not-at-top
  with open(FLAGS.design) as f:
    text = f.read()
  design_from_json(text)
  try:
    out = sandboxed.train_design(text, config.rungs[rung_name], data_cfg=config.data,
                                 train_cfg=config.train, checker_cfg=config.checker, seed=config.seed,
                                 checkpoint_dir=os.path.join(FLAGS.workdir, "checkpoints"),
                                 log_dir=os.path.join(FLAGS.workdir, "tensorboard"), desc=rung_name,
                                 stop_after=FLAGS.stop_after, fit=False)
  except (sandbox.SandboxError, sandbox.DesignFailure) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(out["metrics"], sort_keys=True), flush=True)


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
