"""A rung of the Ladder of Scales: the size designs are fitted to and how long they train there.

`Rung` is the record of one entry of `config.rungs` (the ladder's order is `config.ladder.rungs`);
`make(**values)` is its ConfigDict, defaults filled in. A rung has no context length of its own:
every rung trains on windows of `data.seq_len` tokens, which the run's resolved rung carries as
`seq_len` for the checker and the sizing (genesys_jax/resolve.py).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from gab import fields


@dataclasses.dataclass(frozen=True)
class Rung:
  """One rung. The token budget is `train_tokens`, or parameters x `tokens_per_param` if that is 0."""
  ELSEWHERE = {"seq_len": "data.seq_len, the context length of every rung"}
  # Fields only training reads: the checker, which sizes, probes and trains designs briefly at the
  # lowest rung, reads all the others (a change to them changes its verdicts).
  TRAINING_ONLY = ("train_tokens", "tokens_per_param", "eval_batches")

  d_model: int = fields.field(64, "width designs are sized from", fields.integer(1))
  n_blocks: int = fields.field(2, "blocks designs are sized from", fields.integer(1))
  target_params: int = fields.field(0, "parameters designs are fitted to (+- checker.size_tolerance; "
                                    "0: the GPT seed's at d_model, n_blocks)", fields.integer(0))
  lr: float = fields.field(3e-3, "peak learning rate", fields.number(0.0, lo_open=True))
  batch_size: int = fields.field(16, "sequences per step", fields.integer(1))
  train_tokens: int = fields.field(0, "tokens trained (0: tokens_per_param x parameters)", fields.integer(0))
  tokens_per_param: float = fields.field(0.0, "tokens per parameter when train_tokens is 0",
                                         fields.number(0.0))
  warmup_frac: float = fields.field(0.02, "fraction of the steps warming up", fields.number(0.0, 1.0))
  min_lr_ratio: float = fields.field(0.1, "cosine decay to this fraction of lr", fields.number(0.0, 1.0))
  grad_clip: float = fields.field(1.0, "global-norm clipping", fields.number(0.0, lo_open=True))
  weight_decay: float = fields.field(0.1, "AdamW weight decay", fields.number(0.0))
  eval_batches: int = fields.field(8, "validation batches measured", fields.integer(1))
  grad_accum: int = fields.field(1, "micro-batches per step (batch_size / grad_accum per pass)",
                                 fields.integer(1))
  memory_limit_gb: float = fields.field(0.0, "memory a design may use (0: the device's, if known)",
                                        fields.number(0.0))

  def problems(self) -> list[str]:
    if self.train_tokens == 0 and self.tokens_per_param == 0:
      return [": train_tokens = 0 and tokens_per_param = 0: expected one of them > 0 (the rung's "
              "token budget)"]
    return []


def make(**values) -> ml_collections.ConfigDict:
  """A rung's ConfigDict: the defaults with `values` (names of `Rung`'s fields) over them."""
  unknown = sorted(set(values) - set(fields.definitions(Rung)))
  if unknown:
    raise TypeError(f"not fields of a rung: {unknown}")
  cfg = fields.defaults(Rung)
  cfg.update(values)
  return cfg
