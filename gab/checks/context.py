"""What the checks share: the design, the configs, the check-scale LM, its parameters and inputs.

Later checks reuse what earlier ones computed (the parameters, the forward pass on the causality
batch, the short training run), so each program is compiled once per design.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gab.checks.steps import training_run
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
    self.forward_fn = None       # jitted (params, tokens) -> (logits, final Z), float32
    self.causal_tokens: jax.Array | None = None
    self.causal_worst = 0.0
    self.consistency = None
    self.train_step = None
    self.run: dict[str, Any] | None = None
    self.sizing: dict[str, Any] = {}
    self._plan = None
    self._models: dict[Any, LM] = {}
    self._structural_tokens = None
    self._forward_plain = None

  def build_model(self) -> None:
    self.model = LM(self.tree, self.cfg.vocab_size, self.cfg.d_model, self.cfg.n_blocks)
    self._models[jnp.dtype(jnp.float32)] = self.model

  def compute_dtype(self):
    """The dtype the design trains in: the rung's `dtype`, else the check config's."""
    name = self.rung.get("dtype", None) or self.cfg.get("dtype", None) or "float32"
    return jnp.dtype(name)

  def check_dtypes(self) -> list:
    """float32, then the compute dtype when it differs."""
    return list(dict.fromkeys([jnp.dtype(jnp.float32), self.compute_dtype()]))

  def model_in(self, dtype) -> LM:
    dtype = jnp.dtype(dtype)
    if dtype not in self._models:
      self._models[dtype] = LM(self.tree, self.cfg.vocab_size, self.cfg.d_model, self.cfg.n_blocks,
                               dtype=dtype)
    return self._models[dtype]

  def trained_params(self):
    """The parameters after the effectiveness steps (running them if need be), None if they fail."""
    try:
      run = training_run(self)
    except Exception:  # noqa: BLE001 - differentiability reports it
      return None
    return run.get("params")

  def structural_plan(self):
    if self._plan is None:
      from gab.checks.plan import Plan  # pylint: disable=g-import-not-at-top
      self._plan = Plan(self)
    return self._plan

  @property
  def structural_tokens(self) -> np.ndarray:
    if self._structural_tokens is None:
      plan = self.structural_plan()
      rng = np.random.default_rng(self.cfg.seed + 7)
      self._structural_tokens = rng.integers(
          3, self.cfg.vocab_size, (plan.max_batch, plan.max_length)).astype(np.int32)
    return self._structural_tokens

  def forward_plain(self, params, tokens_BxL):
    if self._forward_plain is None:
      from gab.checks.base import jit  # pylint: disable=g-import-not-at-top
      self._forward_plain = jit(self.model.apply)
    return self._forward_plain(params, tokens_BxL)
