"""Data pipeline throughput: `python -m train.bench_data [--megabytes=50] [--workers=2]`.

Writes a mixed files: corpus (KJV chapters as text files, JSONL and JSONL.gz records) of the
given size into a temporary directory, prepares it (tokenisation with the byte vocabulary, in
`--workers` processes) and then reads shuffled training batches of the `cpu` bench shape
(8 x 257 tokens) and of the paper shape (256 x 2049) through `BatchIterator` from the memory-
mapped shards. Prints one JSON line per measurement (tokens/s).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags

from train import kjv



def write_mixed_corpus(root, target_bytes: int, seed: int = 0) -> str:
  """Writes about `target_bytes` of text under `root`; returns the files: GLOB for it."""
  rng = np.random.default_rng(seed)
  docs = kjv.corpus_documents("kjv")
  os.makedirs(root, exist_ok=True)
  written, part = 0, 0
  words = np.array(["alpha", "beta", "gamma", "delta", "λόγος", "über", "naïve", "東京", "x"])
  while written < target_bytes:
    kind = part % 4
    if kind == 0:  # one chapter per plain text file
      text = docs[int(rng.integers(len(docs)))]
      path = os.path.join(root, f"p{part:05d}.txt")
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    elif kind == 1:  # chapters as blank-line separated blocks: still one doc per file here
      text = "\n\n".join(docs[int(i)] for i in rng.integers(len(docs), size=3))
      path = os.path.join(root, f"b{part:05d}.txt")
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    elif kind == 2:  # JSONL of random-word documents
      path = os.path.join(root, f"j{part:05d}.jsonl")
      with open(path, "w", encoding="utf-8") as f:
        for _ in range(20):
          doc = " ".join(rng.choice(words, size=int(rng.integers(20, 400))))
          f.write(json.dumps({"text": doc, "id": part}) + "\n")
    else:  # gzipped JSONL of shuffled verses
      path = os.path.join(root, f"g{part:05d}.jsonl.gz")
      verses = docs[int(rng.integers(len(docs)))].split(". ")
      rng.shuffle(verses)
      with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(0, len(verses), 4):
          f.write(json.dumps({"text": ". ".join(verses[i:i + 4])}) + "\n")
    written += os.path.getsize(path)
    part += 1
  return os.path.join(str(root), "*")


def main(argv):
  del argv
  from train import data, prepare  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    pattern = write_mixed_corpus(os.path.join(tmp, "text"), _MB.value << 20)
    cfg = data.default_data_config()
    cfg.corpus, cfg.data_dir = f"files:{pattern}", os.path.join(tmp, "data")
    cfg.prepare_workers = _WORKERS.value or os.cpu_count() or 1
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
  _MB = flags.DEFINE_integer("megabytes", 50, "Size of the generated corpus.")
  _WORKERS = flags.DEFINE_integer("workers", 0, "Tokeniser processes (0: all CPUs).")
  _SECONDS = flags.DEFINE_float("seconds", 5.0, "Time spent reading batches per shape.")
  app.run(main)
