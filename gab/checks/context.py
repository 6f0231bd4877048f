"""What the checks share: the design, the configs, the check-scale LM, its parameters and inputs.

Later checks reuse what earlier ones computed (the parameters, the forward pass on the causality
batch, the short training run), so each program is compiled once per design.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from gab.model import LM
from gab.tree import Unit


class Context:
  """The state one `check` call threads through its checks."""

  def __init__(self, tree: Unit, cfg: ml_collections.ConfigDict, rung: ml_collections.ConfigDict):
    self.tree, self.cfg, self.rung = tree, cfg, rung
    self.key = jax.random.key(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # A fixed batch of next-token windows (seq_len + 1 tokens) at the check scale, and one at the
    # rung's full context length; tokens 0..2 are reserved ids and never drawn.
    self.tokens = rng.integers(3, cfg.vocab_size, (cfg.batch, cfg.seq_len + 1)).astype(np.int32)
    self.long_tokens = rng.integers(3, cfg.vocab_size, (cfg.batch, rung.seq_len + 1)).astype(np.int32)
    self.model: LM | None = None
    self.params: Any = None
    self.forward_out: tuple[jax.Array, dict[str, jax.Array]] | None = None  # on the causal batch
    self.causal_tokens: jax.Array | None = None
    self.train_step = None
    self.run: dict[str, Any] | None = None
    self.sizing: dict[str, Any] = {}

  def build_model(self) -> None:
    self.model = LM(self.tree, self.cfg.vocab_size, self.cfg.d_model, self.cfg.n_blocks)
