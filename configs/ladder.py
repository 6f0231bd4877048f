"""The Ladder of Scales and the evolution run around it.

`--config=configs/ladder.py` is the local default: a CPU ladder that finishes on a 2-core machine
in about 15 minutes; `--config=configs/ladder.py:smoke` is a tiny run for tests (about 2 minutes).
"""

from ml_collections import ConfigDict

from gab import checker
from train import data


def rung(d_model, n_blocks, lr, batch_size, train_tokens=0, tokens_per_param=0, eval_batches=8):
  """One rung. The token budget is `train_tokens`, or parameters x `tokens_per_param` if that is 0."""
  return ConfigDict(dict(
      d_model=d_model, n_blocks=n_blocks, lr=lr, batch_size=batch_size, train_tokens=train_tokens,
      tokens_per_param=tokens_per_param, warmup_frac=0.02, min_lr_ratio=0.1, grad_clip=1.0,
      weight_decay=0.1, eval_batches=eval_batches))


def get_config(variant: str | None = None) -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.seeds = ("gpt",)
  c.data = data.default_data_config()
  c.data.seq_len = 128
  c.checker = checker.default_config()
  c.evolution = ConfigDict(dict(n_proposals=8, max_retries=32, exploit_prob=0.8))
  c.ladder = ConfigDict(dict(rungs=("tiny", "small", "medium")))
  c.rungs = ConfigDict(dict(
      tiny=rung(d_model=64, n_blocks=2, lr=3e-3, batch_size=16, train_tokens=400_000),
      small=rung(d_model=96, n_blocks=3, lr=2e-3, batch_size=16, train_tokens=800_000),
      medium=rung(d_model=128, n_blocks=4, lr=1e-3, batch_size=16, train_tokens=1_600_000),
  ))
  if variant in (None, ""):
    return c
  if variant == "smoke":
    c.data.seq_len = 64
    c.evolution.n_proposals = 3
    c.rungs.tiny = rung(d_model=32, n_blocks=1, lr=3e-3, batch_size=8, train_tokens=20_000, eval_batches=4)
    return c
  raise ValueError(f"unknown variant {variant!r} of configs/ladder.py: expected '' or 'smoke'")
