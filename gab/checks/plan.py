"""Which structural programs the causality check runs: lengths, batch sizes, split points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks import structural


class Plan:
  """Two probes per dtype: short (every split point, batch 3) and long (longer than the rung's
  context and than twice every declared chunk, window or kernel shorter than the context; batch 2;
  split points at the declared sizes' boundaries and drawn from the key). A chunk or window at
  least as long as the context never ends or wraps within the lengths the design trains at, so the
  long probe goes just past the context for it, as for the GPT seed (twice the context would cost
  four times the attention, enough for a context-long window to time out). Lengths are primes that
  no dimension of the design's parameters, d_model or the batch sizes equals, so length axes are
  found by size."""

  def __init__(self, ctx):
    self.ctx = ctx
    cfg, rung = ctx.cfg, ctx.rung
    sizes = structural.declared_time_sizes(ctx.tree)
    avoid = {cfg.d_model, 1, 2, 3, cfg.vocab_size}
    for leaf in jax.tree.leaves(ctx.params):
      avoid.update(int(n) for n in np.shape(leaf))
    self.short = structural.probe_length(cfg.seq_len + 1, avoid)
    spans = [2 * size + 1 for size in sizes if size < rung.seq_len]
    self.long = structural.probe_length(max(rung.seq_len + 1, *spans, 2 * self.short + 1), avoid)
    key = jax.random.fold_in(ctx.key, 3)
    self.shapes = {
        (self.short, 3): structural.Probes(list(range(self.short - 1)), [0, 2]),
        (self.long, 2): structural.Probes(
            structural.split_points(self.long, sizes + [cfg.seq_len, rung.seq_len], key,
                                    n_random=4, every=False), [1]),
    }
    self.max_length, self.max_batch = self.long, 3
    self._programs = {}

  def programs(self, dtype) -> dict:
    """{(length, batch): (program, recorded list, Probes)} for models computing in `dtype`."""
    dtype = jnp.dtype(dtype)
    if dtype not in self._programs:
      model = self.ctx.model_in(dtype)
      out = {}
      for (length, batch), probes in self.shapes.items():
        chunk = 0 if length * batch <= 512 else max(1, 4096 // (length * batch))
        program, found = structural.make_program(model, self.ctx.tree, length, batch, probes, chunk)
        out[(length, batch)] = (program, found, probes)
      self._programs[dtype] = out
    return self._programs[dtype]
