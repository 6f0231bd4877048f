"""What the checks share: the design, the configs, its exported programs, parameters and inputs.

The checks judge the design's exported programs (`gab.programs`), never its Python: a check calls
a program through `ExportedLM` (the LM around the blocks) or `call`, and reads the tracing's
`facts` only to name units. Later checks reuse what earlier ones computed (the parameters, the
plan, the short training run), so each program is compiled once per design.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gab import programs as programs_lib
from gab.checks import trace as trace_lib
from gab.checks.steps import training_run
from gab.tree import Unit


class Context:
  """The state one `check` call threads through its checks.

  `programs` are the design's exported programs, or None: then `tracer(tree)` (default: trace in
  this process, for a design of built-in units) exports them when the init check first needs them."""

  def __init__(self, tree: Unit, cfg: ml_collections.ConfigDict, rung: ml_collections.ConfigDict,
               programs: programs_lib.Programs | None = None,
               tracer: Callable[[Unit], programs_lib.Programs] | None = None):
    self.tree, self.cfg, self.rung = tree, cfg, rung
    self.programs = programs
    self._tracer = tracer or (lambda normalized: trace_lib.trace(normalized, cfg, rung))
    self.key = jax.random.key(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # A fixed batch of next-token windows (seq_len + 1 tokens) at the check scale, and one at the
    # rung's full context length; tokens 0..2 are reserved ids and never drawn.
    self.tokens = rng.integers(3, cfg.vocab_size, (cfg.batch, cfg.seq_len + 1)).astype(np.int32)
    self.long_tokens = rng.integers(3, cfg.vocab_size, (cfg.batch, rung.seq_len + 1)).astype(np.int32)
    self.params: Any = None
    self.plan = None
    self.train_step = None
    self.compute_step = None
    self.run: dict[str, Any] | None = None
    self.sizing: dict[str, Any] = {}
    self._calls: dict[str, Callable] = {}
    self._compiled: dict[str, Callable] = {}
    self._models: dict[Any, programs_lib.ExportedLM] = {}

  def ensure_programs(self) -> programs_lib.Programs:
    if self.programs is None:
      self.programs = self._tracer(self.tree)
    return self.programs

  def compute_dtype(self):
    return trace_lib.compute_dtype(self.cfg, self.rung)

  def check_dtypes(self) -> list:
    return trace_lib.check_dtypes(self.cfg, self.rung)

  def facts(self) -> dict[str, Any]:
    return self.ensure_programs().facts

  def call(self, spec: programs_lib.Spec) -> Callable:
    """The program of `spec` as a function (ProgramError if it is missing or failed to trace)."""
    if spec.key not in self._calls:
      self._calls[spec.key] = programs_lib.call(self.ensure_programs(), spec)
    return self._calls[spec.key]

  def compiled(self, name: str, build: Callable[[], Callable]) -> Callable:
    """A (jitted) program of the checks, built once per design."""
    if name not in self._compiled:
      self._compiled[name] = build()
    return self._compiled[name]

  def lm(self, spec: programs_lib.Spec) -> programs_lib.ExportedLM:
    """The check-scale LM whose blocks are the `stack` program of `spec`."""
    if spec.key not in self._models:
      self._models[spec.key] = programs_lib.ExportedLM(self.ensure_programs(), spec,
                                                       self.cfg.vocab_size, init_spec=self.plan.init())
    return self._models[spec.key]

  def train_lm(self, dtype=jnp.float32) -> programs_lib.ExportedLM:
    return self.lm(self.plan.train(dtype))

  def embed(self, params, tokens_BxL, dtype=jnp.float32):
    """The trusted token embeddings in `dtype` (what every program of the plan takes)."""
    return self.train_lm(dtype).embed(params, tokens_BxL)

  def logits(self, params, h_BxLxD, dtype=jnp.float32):
    """The trusted final norm and head on a program's output."""
    lm = self.train_lm(dtype)
    from gab.units.norm import rms_norm  # pylint: disable=g-import-not-at-top
    return lm.head(params, rms_norm(h_BxLxD, params["params"]["final_norm"]))

  def trained_params(self):
    """The parameters after the effectiveness steps (running them if need be), None if they fail."""
    try:
      run = training_run(self)
    except Exception:  # noqa: BLE001 - differentiability reports it
      return None
    return run.get("params")
