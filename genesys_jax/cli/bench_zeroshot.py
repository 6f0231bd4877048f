"""Zero-shot scorer benchmark: `python -m genesys_jax.cli.bench_zeroshot [--train_steps=N] [--max_len=256]`.



Trains a small GPT-seed model briefly on the embedded corpus (random init with --train_steps=0),
then scores every task file under --eval_dir (default: ../shared/eval beside the repository) and
prints one JSON line per task (acc, acc_norm, n, seconds, ...) and a last line with the wall
times and the mean BLiMP accuracy.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer("train_steps", 300, "Training steps (batch 16 x 128 tokens).")
  flags.DEFINE_integer("d_model", 64, "Model width.")
  flags.DEFINE_integer("n_blocks", 2, "Number of blocks.")
  flags.DEFINE_integer("max_len", 256, "Scorer rows are truncated on the left to this.")
  flags.DEFINE_integer("batch_size", 64, "Scorer batch size.")
  flags.DEFINE_integer("limit", 0, "Examples per task (0: all).")
  flags.DEFINE_string("eval_dir", os.path.join(os.path.dirname(_REPO_ROOT), "shared", "eval"),
                      "Folder of *.jsonl task files (searched recursively).")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gab import seeds  # pylint: disable=g-import-not-at-top
  from gab.model import LM  # pylint: disable=g-import-not-at-top
  from train import data, rung, trainer, zeroshot  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  data_cfg = data.default_data_config()
  data_cfg.seq_len = 128
  vocab = data.make_vocabulary(data_cfg)
  tree = seeds.seed("gpt")
  model = LM(tree, vocab.vocab_size, FLAGS.d_model, FLAGS.n_blocks)
  if FLAGS.train_steps > 0:
    batch = 16
    cfg = rung.make(d_model=FLAGS.d_model, n_blocks=FLAGS.n_blocks, lr=3e-3, batch_size=batch,
                    train_tokens=FLAGS.train_steps * batch * data_cfg.seq_len, eval_batches=4)
    result, state = trainer.train_and_evaluate(tree, cfg, data.load_corpus(data_cfg),
                                               trainer.Run(desc="bench_zeroshot"))
    params = state.params
    print(json.dumps({"train": {k: result[k] for k in ("params", "steps", "tokens", "val_bpb",
                                                      "train_loss", "train_wall_s")}}), flush=True)
  else:
    params = model.init(jax.random.key(0), jnp.zeros((1, data_cfg.seq_len), jnp.int32))
  t_eval = time.perf_counter()
  results = zeroshot.evaluate_tasks(model.apply, params, [FLAGS.eval_dir], vocab,
                                    FLAGS.max_len, FLAGS.batch_size, FLAGS.limit or None)
  for name, metrics in results.items():
    print(json.dumps({"task": name, **{k: round(v, 4) if isinstance(v, float) else v
                                       for k, v in metrics.items()}}), flush=True)
  end = time.perf_counter()
  blimp = [results[task.name]["acc"] for task in (
      zeroshot.load_task(p, limit=1) for p in zeroshot.task_paths([FLAGS.eval_dir]))
           if task.format == "blimp"]
  print(json.dumps({"total_wall_s": round(end - t0, 1), "eval_wall_s": round(end - t_eval, 1),
                    "tasks": len(results), "examples": sum(m["n"] for m in results.values()),
                    "blimp_acc_mean": round(sum(blimp) / len(blimp), 4) if blimp else None,
                    "max_len": FLAGS.max_len, "batch_size": FLAGS.batch_size,
                    "train_steps": FLAGS.train_steps}), flush=True)


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
