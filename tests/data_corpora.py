"""Test corpora written on the fly (train/bench_data.py's mixed corpus: KJV chapters as text
files, JSONL and JSONL.gz records of seeded random words and shuffled verses) and their config."""

from train import data
from train.bench_data import write_mixed_corpus  # noqa: F401  (re-exported)


def files_cfg(data_dir, pattern, **overrides):
  cfg = data.default_data_config()
  cfg.corpus = f"files:{pattern}"
  cfg.data_dir = str(data_dir)
  cfg.seq_len = 64
  cfg.prepare_workers = 1
  cfg.update(overrides)
  return cfg
