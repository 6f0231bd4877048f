"""Train one design on one rung: `python -m train.train --design=FILE.json --rung=tiny --workdir=DIR`.

The verifier's job outside the loop: for a quick experiment, for multi-host runs (one process per
host, joined with `--coordinator=HOST:PORT --num_processes=N --process_id=I`), and for the tests
of sharding and resume. Runs again on the same `--workdir` resume from its latest good checkpoint.
Prints one JSON line of metrics on process 0.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ladder.py", "Ladder config file.")
_DESIGN = flags.DEFINE_string("design", None, "Design JSON file (as written by gab.seeds).")
_RUNG = flags.DEFINE_string("rung", None, "Rung name in the config; default: the lowest rung.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and TensorBoard events go here.")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None, "Stop after this many steps (resume later).")
_DUMP = flags.DEFINE_string("dump_params", None, "Write the final parameters to this .npz file.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.")
flags.mark_flags_as_required(["design", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from gab.tree import DesignError, load_design, load_design_file  # pylint: disable=g-import-not-at-top
  from train import data as data_lib, trainer  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  rung_name = _RUNG.value or config.ladder.rungs[0]
  if rung_name not in config.rungs:
    print(f"error: unknown rung {rung_name!r}; the config has {sorted(config.rungs)}", file=sys.stderr)
    sys.exit(2)
  try:
    if load_design_file(_DESIGN.value)[2]:
      return _train_sandboxed(config, rung_name)
    tree, _ = load_design(_DESIGN.value)
    corpus = data_lib.load_corpus(config.data)
    metrics = trainer.train_and_evaluate(
        tree, config.rungs[rung_name], corpus, seed=config.seed,
        checkpoint_dir=os.path.join(_WORKDIR.value, "checkpoints"),
        log_dir=os.path.join(_WORKDIR.value, "tensorboard"), train_cfg=config.train,
        stop_after=_STOP_AFTER.value, desc=rung_name, return_state=bool(_DUMP.value))
  except (DesignError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  state = metrics.pop("state", None)
  if _DUMP.value:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    params = multihost_utils.process_allgather(state.params, tiled=True)
    if jax.process_index() == 0:
      flat = jax.tree_util.tree_flatten_with_path(params)[0]
      np.savez(_DUMP.value, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in flat})
  if jax.process_index() == 0:
    print(json.dumps(metrics, sort_keys=True), flush=True)


def _train_sandboxed(config, rung_name):
  """A design with code units trains in gab.sandbox (no secrets, no network): its code never runs
  in this process. Sized to the rung as the loop does; --dump_params and multi-process runs are
  not available for it."""
  from gab import sandbox  # pylint: disable=g-import-not-at-top
  if _DUMP.value or _COORDINATOR.value:
    print("error: --dump_params and --coordinator are not available for designs with code units",
          file=sys.stderr)
    sys.exit(2)
  from gab.tree import design_from_json  # pylint: disable=g-import-not-at-top
  from train import data as data_lib  # pylint: disable=g-import-not-at-top
  with open(_DESIGN.value) as f:
    text = f.read()
  design_from_json(text)
  rung = config.rungs[rung_name]
  with rung.unlocked():
    rung.seq_len = config.data.seq_len
  checker_cfg = config.checker
  with checker_cfg.unlocked():
    checker_cfg.vocab_size = data_lib.load_corpus(config.data).vocab_size  # builds the data cache
  try:
    out = sandbox.train_design(text, rung, data_cfg=config.data, train_cfg=config.train,
                               checker_cfg=checker_cfg, seed=config.seed,
                               checkpoint_dir=os.path.join(_WORKDIR.value, "checkpoints"),
                               log_dir=os.path.join(_WORKDIR.value, "tensorboard"), desc=rung_name,
                               stop_after=_STOP_AFTER.value, fit=False)
  except (sandbox.SandboxError, sandbox.DesignFailure) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(out["metrics"], sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
