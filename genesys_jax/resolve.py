"""A run's config, resolved once: every value the libraries need, spelled out before anything runs.

`resolve(config)` is a copy of a ladder config (configs/ladder.py) in which
- every rung of `config.rungs` carries `seq_len`, the context length the data is packed at
  (`data.seq_len`): the checker's long probes and the stability and efficiency checks, the sizing
  and the trainer read it from the rung;
- `checker.vocab_size` is the data's vocabulary size (`data.vocab`: 259 for bytes, the SentencePiece
  model's size for `spm`), so the checker sizes designs against the real embedding table.
The loop (`genesys_jax.loop.Evolution`), a verifier worker and the single-design commands
(`genesys_jax.cli.check`, `genesys_jax.cli.train`) resolve the config they are given and then hand
`config.rungs[NAME]` and `config.checker` to gab/ and train/ unchanged. It is idempotent: a worker
resolves again the config the controller published, already resolved (or written by an older
version without these fields). The run's `config.json` is the resolved config.

`check_rung(config, name)` is the rung the checker CLI checks at: the resolved rung plus `dtype`,
the compute dtype the design will train in (`train.dtype`).
"""

from __future__ import annotations

import copy

import ml_collections

from train import vocab as vocab_lib


def vocab_size(data_cfg) -> int:
  """The vocabulary's size for `data.vocab` (reads `data.spm_model` for 'spm'; no corpus needed)."""
  return int(vocab_lib.make_vocabulary(data_cfg).vocab_size)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with each rung's `seq_len` and the checker's `vocab_size` filled in
  (a section the config lacks is left out: a checker-only config may have no `data.vocab`)."""
  out = copy.deepcopy(config)
  data = out.get("data")
  with out.unlocked():
    if data is not None and "seq_len" in data and "rungs" in out:
      for name in out.rungs:
        out.rungs[name].seq_len = int(data.seq_len)
    if data is not None and "vocab" in data and "checker" in out:
      out.checker.vocab_size = vocab_size(data)
  return out


def check_rung(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Rung `name` of the resolved `config`, with the compute dtype of `train.dtype` if it has one."""
  rung = ml_collections.ConfigDict(config.rungs[name].to_dict())
  if "train" in config and config.train.get("dtype"):
    rung.dtype = config.train.dtype  # the compute dtype the design will train in
  return rung
