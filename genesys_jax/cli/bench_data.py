"""Data pipeline throughput: `python -m genesys_jax.cli.bench_data [--megabytes=50] [--workers=2]
[--seconds=5]`.

Prepares a mixed files: corpus of the given size (`train.bench_data.write_mixed_corpus`) in a
temporary directory and reads shuffled batches of the cpu and paper shapes from its shards; one JSON
line per measurement (tokens/s).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer("megabytes", 50, "Size of the generated corpus.")
  flags.DEFINE_integer("workers", 0, "Tokeniser processes (0: all CPUs).")
  flags.DEFINE_float("seconds", 5.0, "Time spent reading batches per shape.")


def main(argv):
  del argv
  from train import data, prepare  # pylint: disable=g-import-not-at-top
  from train.bench_data import write_mixed_corpus  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    pattern = write_mixed_corpus(os.path.join(tmp, "text"), FLAGS.megabytes << 20)
    cfg = data.default_data_config()
    cfg.corpus, cfg.data_dir = f"files:{pattern}", os.path.join(tmp, "data")
    cfg.prepare_workers = FLAGS.workers or os.cpu_count() or 1
    text_bytes = sum(os.path.getsize(os.path.join(tmp, "text", f))
                     for f in os.listdir(os.path.join(tmp, "text")))
    t0 = time.perf_counter()
    prepare.prepare(cfg, progress=False)
    prep_s = time.perf_counter() - t0
    _, manifest = data.prepared(cfg)
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    print(json.dumps({"bench": "prepare", "corpus_file_bytes": text_bytes, "tokens": tokens,
                      "workers": cfg.prepare_workers, "seconds": prep_s,
                      "tokens_per_s": tokens / prep_s}), flush=True)
    for name, seq_len, batch in (("cpu", 256, 8), ("paper", 2048, 256)):
      cfg.seq_len = seq_len
      windows = data.load_split(cfg, "train")
      it = data.BatchIterator(windows, batch, seed=0)
      n, t0 = 0, time.perf_counter()
      while time.perf_counter() - t0 < FLAGS.seconds:
        it.next()
        n += 1
      dt = time.perf_counter() - t0
      print(json.dumps({"bench": "load", "shape": name, "batch": batch, "seq_len": seq_len,
                        "batches": n, "seconds": dt,
                        "tokens_per_s": n * batch * seq_len / dt}), flush=True)


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
