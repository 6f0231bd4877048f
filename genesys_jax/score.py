"""Score a verification's checkpoint on zero-shot task files after the fact, and keep the result.

`python -m genesys_jax.score --workdir=DIR --design=ID --rung=R --tasks=PATH[,PATH...]` rebuilds the
model of design ID as it was trained at rung R (its d_model and n_blocks from the verification),
restores the final checkpoint under DIR/checkpoints/ID/R, scores it with
`train.zeroshot.evaluate_tasks` and stores the accuracies with that verification (`zeroshot`, and
`zeroshot_detail`, merged into what was there). Prints the scores as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import app, flags


def score(workdir: str, design_id: str, rung_name: str, tasks: list[str] | str,
          max_len: int | None = None, batch_size: int = 32, limit: int = 0) -> dict[str, Any]:
  """{task: acc_norm (acc where there is none)}; the verification in the store now carries them."""
  import jax  # pylint: disable=g-import-not-at-top  (heavy imports only once the flags are good)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  from evolution.store import Store  # pylint: disable=g-import-not-at-top
  from gab.model import LM  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json  # pylint: disable=g-import-not-at-top
  from train import data as data_lib  # pylint: disable=g-import-not-at-top
  from train import trainer, zeroshot  # pylint: disable=g-import-not-at-top
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(os.path.join(workdir, "evolution.db")) or not os.path.exists(config_path):
    raise FileNotFoundError(f"{workdir} holds no evolution.db and config.json: expected a run's workdir")
  config = ml_collections.ConfigDict(json.load(open(config_path)))
  if rung_name not in config.rungs:
    raise KeyError(f"rung {rung_name!r} is not in this run's config: expected one of {sorted(config.rungs)}")
  store = Store.open(workdir)
  try:
    found = [v for v in store.verifications(design_id) if v["rung"] == rung_name]
    if not found or found[0]["metrics"].get("val_bpb") is None:
      raise KeyError(f"design {design_id!r} has no successful verification at rung {rung_name!r}")
    metrics = found[0]["metrics"]
    tree, _ = design_from_json(store.design(design_id)["tree"])
    ckpt_dir = os.path.join(workdir, "checkpoints", design_id, rung_name)
    if not os.path.isdir(ckpt_dir):
      raise FileNotFoundError(f"no checkpoint at {ckpt_dir}")
    rung = config.rungs[rung_name]
    vocab = data_lib.make_vocabulary(config.data)
    model = LM(tree, vocab.vocab_size, metrics["d_model"], metrics["n_blocks"],
               dtype=jnp.dtype(config.train.dtype))
    seq_len = config.data.seq_len
    optimizer = trainer.make_optimizer(rung, metrics["steps"])

    def init_state(key):
      params = model.init(key, jnp.zeros((1, seq_len), jnp.int32))
      return trainer.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params),
                                jax.random.key_data(key))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            jax.eval_shape(init_state, jax.random.key(0)))
    ckpt = Checkpointer(ckpt_dir)
    try:
      restored = ckpt.restore_latest(abstract)
    finally:
      ckpt.close()
    if restored is None:
      raise FileNotFoundError(f"no readable checkpoint in {ckpt_dir}")
    _, state, _ = restored
    detail = zeroshot.evaluate_tasks(model.apply, state.params, tasks, vocab,
                                     min(max_len or seq_len, seq_len), batch_size, limit or None)
    scores = {t: m.get("acc_norm", m["acc"]) for t, m in detail.items()}
    updated = {**metrics, "zeroshot": {**(metrics.get("zeroshot") or {}), **scores},
               "zeroshot_detail": {**(metrics.get("zeroshot_detail") or {}), **detail}}
    with store.transaction():
      store.add_verification(design_id, rung_name, updated)
    return scores
  finally:
    store.close()


def define_flags() -> None:
  """The CLI's flags, defined only when it runs (importing `score` defines none)."""
  flags.DEFINE_string("workdir", None, "The run's workdir.")
  flags.DEFINE_string("design", None, "Design id.")
  flags.DEFINE_string("rung", None, "Rung name of the verification to score.")
  flags.DEFINE_list("tasks", None, "Zero-shot task files or folders of them.")
  flags.DEFINE_integer("limit", 0, "Examples per task (0: all).")
  flags.DEFINE_integer("batch_size", 32, "Scoring batch size.")
  flags.mark_flags_as_required(["workdir", "design", "rung", "tasks"])


def parse_flags(argv):
  """absl's parser, with a missing or bad flag as one line and exit 2 (not absl's FATAL, exit 1)."""
  from genesys_jax import cli_errors  # pylint: disable=g-import-not-at-top  (light)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cli_errors.fail(f"{cli_errors.flag_error(e)} (usage: python -m genesys_jax.score "
                    "--workdir=DIR --design=ID --rung=R --tasks=PATH[,PATH...] [--limit=N])")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from genesys_jax import cli  # pylint: disable=g-import-not-at-top  (light)
  cli.quiet_absl_logging()
  try:
    f = flags.FLAGS
    scores = score(f.workdir, f.design, f.rung, f.tasks, batch_size=f.batch_size, limit=f.limit)
  except (FileNotFoundError, KeyError, ValueError) as e:
    print(f"error: {str(e).strip(chr(34) + chr(39))}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(scores, indent=1, sort_keys=True))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
