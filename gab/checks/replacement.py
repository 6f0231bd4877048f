"""Forward tests of causality on the programs the trainer runs, independent of any VJP.

For every split point t of a length (all of them), the tokens after t are replaced and the
program's outputs at positions <= t must stay exactly what they were: each row of a batch gets its
own t, and its outputs are compared with the same row of the unreplaced batch, computed by the
same compiled loop body at the same batch position, so a causal design reproduces them bit for bit
(a reduction cannot round differently: nothing it sums has changed). Rows whose tokens are replaced
from position 0 test batch independence: every other row must stay exactly what it was. A program
with an FFT (rounding from every position) is allowed `structural.FFT_RTOL` x its dtype's epsilon of
its largest output.

`gab.checks.causality` runs them on the `stack` programs (the form that is trained) at the rung's
context length and its half, in every compute dtype, at parameter points the checking side chooses
(gates opened by large and sign-flipped vectors, scaled matrices, the trained parameters), and on
the probed programs at the structural lengths. When a `stack` program leaks, the probed program of
the same shape names the first unit whose output (or written Z entry) changes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks import structural
from gab.checks.base import jit
from gab.checks.structural import Recorded


def split_groups(batch: int, length: int) -> np.ndarray:
  """[G, batch] split points: first nothing replaced (t = length - 1 on every row: the reference),
  then t = 0 .. length - 2 spread over the rows, then one group per row with that row replaced
  from position 0 (t = -1)."""
  ts = list(range(length - 1))
  ts += [length - 1] * (-len(ts) % batch)
  groups = np.asarray(ts, np.int32).reshape(-1, batch)
  whole = np.full((batch, batch), length - 1, np.int32)
  np.fill_diagonal(whole, -1)
  reference = np.full((1, batch), length - 1, np.int32)
  return np.concatenate([reference, groups, whole if batch > 1 else whole[:0]])


def _past(shape, rec: Recorded, t_B):
  """The elements at positions <= the row's t (every length axis); without a batch axis, <= the
  smallest t of the group; arrays without a length axis are not compared."""
  if not rec.length_axes:
    return jnp.zeros(shape, bool)
  if rec.batch_axis is not None:
    t = jnp.take(t_B, jax.lax.broadcasted_iota(jnp.int32, shape, rec.batch_axis))
  else:
    t = jnp.min(t_B)
  mask = jnp.ones(shape, bool)
  for a in rec.length_axes:
    mask &= jax.lax.broadcasted_iota(jnp.int32, shape, a) <= t
  return mask


@dataclasses.dataclass
class Result:
  """Largest change per group and array, per group and row of the program's output, the arrays'
  scale, and which arrays they are (the output last)."""
  change_GxN: np.ndarray
  rows_GxB: np.ndarray
  scale_N: np.ndarray
  groups: np.ndarray
  found: list[Recorded]
  rtol: float
  reference: np.ndarray | None = None  # the program's output on the unreplaced batch

  def leaking(self) -> np.ndarray:
    return self.change_GxN > self.rtol * self.scale_N[None, :]

  def first(self) -> tuple[int, int] | None:
    """(group, row) of the first leak in the program's output: across the batch if a row replaced
    whole changed another (then the other groups' rows may have changed through the batch too),
    else the smallest split point."""
    bad = self.rows_GxB > self.rtol * self.scale_N[-1]
    if not bad.any():
      return None
    whole = (self.groups < 0).any(axis=1)  # groups with a row replaced from position 0
    order = sorted(zip(*np.nonzero(bad)), key=lambda gr: (not whole[gr[0]], self.groups[gr]))
    group, row = order[0]
    if whole[group]:  # the rows that changed are the others: name the one replaced
      row = int(np.argmin(self.groups[group]))
    return int(group), int(row)

  def culprit(self) -> Recorded | None:
    """The first array (execution order) that changes where it must not."""
    bad = self.leaking().any(0)
    return self.found[int(np.argmax(bad))] if bad[:-1].any() else None


def replacement_program(outputs, found: list[Recorded], batch: int, length: int):
  """`program(params, base_BxL, noise_BxL, t_GxB, scale) -> (change [G, N], rows [G, B], sizes
  [N], reference)` (to jit) for `outputs(params, tokens_BxL, scale) -> arrays` (the program's
  output last) described by `found`: the largest change of each array where it must not change,
  per group of split points (`split_groups`), of the last array per row, each array's largest
  magnitude, and the last array on the unreplaced batch."""

  def program(p, base_BxL, noise_BxL, t_GxB, s):
    # One loop body computes every batch, the unreplaced one first (it is kept in the carry):
    # the same compiled code at the same batch position, so a causal design's outputs at the
    # unreplaced positions are bit for bit the same (two copies of a program may round apart).
    shapes = jax.eval_shape(lambda: outputs(p, base_BxL, s))

    def group(ref, t_B):
      tokens = jnp.where(jnp.arange(length)[None, :] > t_B[:, None], noise_BxL, base_BxL)
      # Materialised once: XLA may otherwise recompute the last operations inside each consumer
      # (the carry, the comparison), at different precision (bfloat16 rounding elided in one).
      out = jax.lax.optimization_barrier(outputs(p, tokens, s))
      first = jnp.all(t_B >= length - 1)
      ref = [jnp.where(first, o, r) for o, r in zip(out, ref)]
      changes, rows = [], None
      for o, r, rec in zip(out, ref, found):
        o32, r32 = o.astype(jnp.float32), r.astype(jnp.float32)
        same = (o32 == r32) | (jnp.isnan(o32) & jnp.isnan(r32))
        d = jnp.where(same, 0.0, jnp.nan_to_num(jnp.abs(o32 - r32), nan=jnp.inf))
        d = jnp.where(_past(o.shape, rec, t_B), d, 0.0)
        changes.append(jnp.max(d, initial=0.0))
        rows = jnp.max(d.reshape(batch, -1), axis=1)
      return ref, (jnp.stack(changes), rows)

    zeros = [jnp.zeros(a.shape, a.dtype) for a in shapes]
    ref, (change, rows) = jax.lax.scan(group, zeros, t_GxB)
    sizes = jnp.stack([jnp.max(jnp.where(jnp.isfinite(r32), jnp.abs(r32), 0.0), initial=0.0)
                       for r32 in (r.astype(jnp.float32) for r in ref)])
    return change, rows, sizes, ref[-1]
  return program


OUTPUT = Recorded(None, None, frozenset(), (1,), 0)  # a program's [batch, length, ...] output


def forward_test(ctx, spec, params, scale: float = 1.0) -> Result:
  """Replacement over every split point for the program of `spec` (stack or probed)."""
  dtype, batch, length = jnp.dtype(spec.dtype), spec.batch, spec.length
  probed = spec.kind == "probed"
  found = structural.recorded_arrays(ctx, spec) if probed else []
  found = found + [OUTPUT]

  def build():
    fn = ctx.call(spec)

    def outputs(p, tokens, s):
      r = fn(p, ctx.embed(p, tokens, dtype) * jnp.asarray(s).astype(dtype))
      return list(r[1]) + [r[0]] if probed else [r]
    return jit(replacement_program(outputs, found, batch, length))

  # The same rows at every length (a shorter one is a prefix): `reference`s compare as prefixes.
  rng = np.random.default_rng(ctx.cfg.seed + 17)
  longest = max(length, ctx.rung.seq_len)
  base, noise = (rng.integers(3, ctx.cfg.vocab_size, (batch, longest)).astype(np.int32)[:, :length]
                 for _ in range(2))
  groups = split_groups(batch, length)
  program = ctx.compiled(f"forward {spec.key}", build)
  change, rows, sizes, reference = jax.device_get(program(params, base, noise, groups, scale))
  return Result(np.asarray(change), np.asarray(rows), np.asarray(sizes), groups, found,
                structural.tolerance(ctx, spec), np.asarray(reference))
