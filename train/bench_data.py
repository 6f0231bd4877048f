"""Data pipeline throughput: `python -m genesys_jax.cli.bench_data [--megabytes=50] [--workers=2]`
; `write_mixed_corpus` writes its corpus.

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

import numpy as np

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

