"""Which programs the checks run: lengths, batch sizes, dtypes and the structural tests' split points.

The plan is a function of the design's declarations, the configs and the shapes of its parameters
at the check scale, so the tracing side (which exports the programs) and the checking side (which
runs them, and refuses a set of programs that is not this plan's) compute the same one.

  short, long     prime lengths for the exact structural tests (`gab.checks.structural`): every
                  split point at the short one (batch 3); at the long one (longer than the rung's
                  context and than twice every declared chunk, window or kernel shorter than the
                  context; batch 2) the declared sizes' boundaries and points drawn from the key.
                  A chunk or window at least as long as the context never ends or wraps within
                  the lengths the design trains at, so the long probe goes just past the context
                  for it, as for the GPT seed (twice the context would cost four times the
                  attention, enough for a context-long window to time out). Primes that no
                  dimension of the parameters, d_model or the batch sizes equals, so length axes
                  are found by size.
  rung lengths    the rung's own context length and its half (lengths that share its divisors):
                  the forward tests (`gab.checks.replacement`) run there, on the very program
                  kind the trainer runs (`stack`), at every split point; a probed program at the
                  full length names the unit that leaks.
  train           the check scale's [batch, seq_len]: the training steps, the forward check
  dataflow        [batch, seq_len] in float32: undeclared Z reads, mixing, input dependence
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks import structural
from gab.programs import Spec

STRUCTURAL_BATCH = {"short": 3, "long": 2}


class Plan:
  """The programs one design's checks run (see the module docstring)."""

  def __init__(self, tree, cfg, rung, param_shapes, dtypes):
    self.cfg, self.rung = cfg, rung
    self.d, self.n = cfg.d_model, cfg.n_blocks
    self.dtypes = [jnp.dtype(t).name for t in dtypes]
    sizes = structural.declared_time_sizes(tree)
    avoid = {cfg.d_model, 1, 2, 3, cfg.vocab_size}
    for leaf in jax.tree.leaves(param_shapes):
      avoid.update(int(n) for n in np.shape(leaf))
    self.short = structural.probe_length(cfg.seq_len + 1, avoid)
    spans = [2 * size + 1 for size in sizes if size < rung.seq_len]
    self.long = structural.probe_length(max(rung.seq_len + 1, *spans, 2 * self.short + 1), avoid)
    key = jax.random.fold_in(jax.random.key(cfg.seed), 3)
    self.structural = {
        (self.short, STRUCTURAL_BATCH["short"]): structural.Probes(list(range(self.short - 1)), [0, 2]),
        (self.long, STRUCTURAL_BATCH["long"]): structural.Probes(
            structural.split_points(self.long, sizes + [cfg.seq_len, rung.seq_len], key,
                                    n_random=4, every=False), [1]),
    }
    self.rung_lengths = sorted({rung.seq_len, max(2, rung.seq_len // 2)}, reverse=True)
    self.batch = cfg.batch

  @staticmethod
  def init_spec(cfg) -> Spec:
    """The check-scale init: parameters for tokens of the check's [batch, seq_len]."""
    return Spec("init", cfg.d_model, cfg.n_blocks, batch=cfg.batch, length=cfg.seq_len)

  def init(self) -> Spec:
    return self.init_spec(self.cfg)

  def spec(self, kind: str, dtype, batch: int, length: int, vjp: bool = False) -> Spec:
    return Spec(kind, self.d, self.n, jnp.dtype(dtype).name, batch, length, vjp)

  def train(self, dtype) -> Spec:
    return self.spec("stack", dtype, self.batch, self.cfg.seq_len, vjp=True)

  def dataflow(self) -> Spec:
    return self.spec("dataflow", jnp.float32, self.batch, self.cfg.seq_len, vjp=True)

  def forward(self, dtype, length: int, probed: bool = False) -> Spec:
    """The forward test's program at a rung length (with its VJP where the training steps or the
    stability check also run it)."""
    return self.spec("probed" if probed else "stack", dtype, self.batch, length,
                     vjp=not probed and length in (self.rung.seq_len, self.cfg.seq_len))

  def structural_spec(self, dtype, length: int, batch: int) -> Spec:
    return self.spec("probed", dtype, batch, length, vjp=True)

  def specs(self) -> list[Spec]:
    """Every program of the plan at the check scale."""
    out = [self.dataflow()]
    for dtype in self.dtypes:
      out.append(self.train(dtype))
      out.append(self.spec("probed", dtype, self.batch, self.cfg.seq_len))
      out += [self.forward(dtype, length) for length in self.rung_lengths]
      out.append(self.forward(dtype, self.rung.seq_len, probed=True))  # names the unit that leaks
      out += [self.structural_spec(dtype, length, batch) for length, batch in self.structural]
    return list(dict.fromkeys(out))
