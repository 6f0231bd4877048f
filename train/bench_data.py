"""Data pipeline throughput: `python -m train.bench_data [--megabytes=50] [--workers=2]`.

Writes a mixed files: corpus (KJV chapters as text files, JSONL and JSONL.gz records) of the
given size into a temporary directory, prepares it (tokenisation with the byte vocabulary, in
`--workers` processes) and then reads shuffled training batches of the `cpu` bench shape
(8 x 257 tokens) and of the paper shape (256 x 2049) through `BatchIterator` from the memory-
mapped shards. Prints one JSON line per measurement (tokens/s).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from absl import app, flags

_MB = flags.DEFINE_integer("megabytes", 50, "Size of the generated corpus.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Tokeniser processes (0: all CPUs).")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Time spent reading batches per shape.")


def main(argv):
  del argv
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
  from data_corpora import files_cfg, write_mixed_corpus  # pylint: disable=g-import-not-at-top
  from train import data, prepare  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    pattern = write_mixed_corpus(os.path.join(tmp, "text"), _MB.value << 20)
    cfg = files_cfg(os.path.join(tmp, "data"), pattern,
                    prepare_workers=_WORKERS.value or os.cpu_count() or 1)
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
      while time.perf_counter() - t0 < _SECONDS.value:
        it.next()
        n += 1
      dt = time.perf_counter() - t0
      print(json.dumps({"bench": "load", "shape": name, "batch": batch, "seq_len": seq_len,
                        "batches": n, "seconds": dt,
                        "tokens_per_s": n * batch * seq_len / dt}), flush=True)


if __name__ == "__main__":
  app.run(main)
