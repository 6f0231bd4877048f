"""A run's config, resolved once: every value the libraries need, spelled out before anything runs.

`resolve(config)` is a copy of a validated run config (genesys_jax/run_config.py) in which
- every rung of `config.rungs` carries `seq_len`, the context length of every rung, whose one
  definition is `data.seq_len` (the data is cut into windows of it; a rung has no field of that
  name, so a config cannot set another one: genesys_jax/validate.py refuses it): the checker's long
  probes and the stability and efficiency checks and the sizing read it from the rung;
- `checker.vocab_size` is the data's vocabulary size (`data.vocab`: 259 for bytes, the SentencePiece
  model's size for `spm`; the field is derived, and validation refuses a config that sets it), so
  the checker sizes designs against the real embedding table.
The loop's controller (genesys_jax/loop.py), a verifier worker and the single-design commands
(`genesys_jax.cli.check`, `genesys_jax.cli.train`) resolve the config they are given and then hand
`config.rungs[NAME]` and `config.checker` to gab/ and train/ unchanged. It is idempotent: a worker
resolves again the config the controller published, already resolved. The run's `config.json` is
the resolved config.

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
  """A copy of `config` with each rung's `seq_len` and the checker's `vocab_size` filled in."""
  out = copy.deepcopy(config)
  seq_len = int(out.data.seq_len)
  with out.unlocked():
    for name, rung in out.rungs.items():
      if rung.get("seq_len", seq_len) != seq_len:  # resolved before with another data.seq_len
        raise ValueError(f"config.rungs.{name}.seq_len = {rung.seq_len} differs from data.seq_len = "
                         f"{seq_len}: a rung's context length is data.seq_len")
      rung.seq_len = seq_len
    out.checker.vocab_size = vocab_size(out.data)
  return out


def check_rung(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Rung `name` of the resolved `config`, with the compute dtype of `train.dtype`."""
  rung = ml_collections.ConfigDict(config.rungs[name].to_dict())
  rung.dtype = config.train.dtype  # the compute dtype the design will train in
  return rung
