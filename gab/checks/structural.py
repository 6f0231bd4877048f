"""Exact structural tests of causality and batch independence, by reverse-mode differentiation.

The probed program (`gab.programs`, kind "probed") runs on the token embeddings plus a
perturbation `delta`. The gradient of every array it returns (each unit's output, each Z entry a
unit writes, the final Z) and of the logits at positions <= t (random cotangents), pulled back to
the embeddings of the positions after t, is a sum of terms that are all exact zeros in a causal
design: masked scores carry exact-zero weights, left-padded convolutions multiply exact zeros, and a
sum of exact zeros is zero in any order. So the test needs no tolerance, reduction-order noise
cannot flip it, and a leak of 1e-8 x a future token's features still shows (as a nonzero
gradient). Likewise the other sequences' outputs must have exactly zero gradient w.r.t. one
sequence's embeddings. The pull-back is the program's own exported VJP: a design that defines its
own (`jax.custom_vjp`) can make it lie, which is why `gab.checks.replacement` tests the forward
programs themselves. One exception to exactness: a program with an FFT mixes every position with
rounding noise, and there the tolerance is `FFT_RTOL` x the dtype's epsilon of the largest gradient.

Arrays of any layout are covered: an axis whose size is the probe length is a length axis (the
lengths are primes chosen to differ from the design's other dimensions), the first other axis of
the batch's size the batch axis; for an array with several length axes (an [L, L] score matrix)
the positions <= t are those whose every length index is <= t. An array without a length axis (a
summary of the whole sequence) is not itself positional; whatever reads it is. The shapes are the
program's own; which unit produced an array is what the tracing recorded (`facts`).

Derivatives cannot see leaks through discrete functions of future values (argmax, comparisons);
the forward tests in `gab.checks.replacement` cover those.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gab import registry
from gab.checks.base import jit, on_device
from gab.checks.instrument import where_from
from gab.checks.probe import Location
from gab.programs import has_fft, out_shapes
from gab.tree import Unit

FFT_RTOL = 64.0  # x the compute dtype's epsilon: an FFT's rounding across positions is not a leak

# Hyperparameters that size a window, chunk or kernel along time.
TIME_SIZED = ("chunk_size", "window", "kernel_size", "conv_size", "mini_batch", "block_size",
              "chunk", "lookback", "history")


def is_prime(n: int) -> bool:
  return n > 1 and all(n % p for p in range(2, int(n ** 0.5) + 1))


def probe_length(at_least: int, avoid: set[int]) -> int:
  """The smallest prime >= `at_least` that is none of the sizes in `avoid`."""
  n = max(2, at_least)
  while not is_prime(n) or n in avoid:
    n += 1
  return n


def declared_time_sizes(tree: Unit) -> list[int]:
  """The int hyperparameters of the design that size something along time."""
  sizes = []
  for _, unit in tree.walk():
    spec = registry.get(unit.kind)
    for p in spec.params:
      value = registry.hparam(unit, p.name)
      if isinstance(value, int) and not isinstance(value, bool) and (
          p.name in TIME_SIZED or any(w in p.name for w in ("chunk", "window", "kernel"))):
        sizes.append(value)
  return sizes


def perturb(params, key: jax.Array, scale: float = 0.3, floor: float = 0.05):
  """Parameters moved by noise of `scale` x their RMS plus `floor`: zero-initialised gates open.

  Drawn with numpy from a generator seeded by `key` (no program to compile); put on the device."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist())

  def move(leaf):
    a = np.asarray(leaf)
    rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0
    return (a + (scale * rms + floor) * rng.standard_normal(a.shape)).astype(a.dtype)
  return on_device(jax.tree.map(move, jax.device_get(params)))


@dataclasses.dataclass(frozen=True)
class Recorded:
  """One array a program returns: who produced it (None for the LM's logits/final Z) and what."""
  where: Location | None
  key: str | None         # None: the unit's output; else the Z entry written
  looked_up: frozenset    # the Z entries the unit read
  length_axes: tuple[int, ...]
  batch_axis: int | None

  def describe(self) -> str:
    if self.where is None:
      return "the logits" if self.key is None else f"the final Z[{self.key!r}]"
    return f"{self.where}, in its output" if self.key is None else (
        f"{self.where}, in the Z[{self.key!r}] it writes")


def axes_of(shape, batch: int, length: int) -> tuple[tuple[int, ...], int | None]:
  """(length axes, batch axis) of an array of `shape` in a program run at [batch, length]."""
  axes = tuple(i for i, n in enumerate(shape) if n == length)
  return axes, next((i for i, n in enumerate(shape) if n == batch and i not in axes), None)


def recorded_arrays(ctx, spec) -> list[Recorded]:
  """The arrays of a probed program after its output, as the program's shapes and the tracing's
  facts describe them (an unknown producer where the facts do not match the program)."""
  shapes = out_shapes(ctx.ensure_programs(), spec)[1:]
  facts = ctx.facts().get("recorded", {}).get(spec.key, [])
  if len(facts) != len(shapes):
    facts = [{"where": None, "key": f"array {i}", "looked_up": []} for i in range(len(shapes))]
  out = []
  for fact, shape in zip(facts, shapes):
    axes, batch = axes_of(shape, spec.batch, spec.length)
    out.append(Recorded(where_from(fact["where"]), fact["key"], frozenset(fact["looked_up"]), axes,
                        batch))
  return out


def _checked_mask(shape, rec: Recorded, t, row):
  """The elements a causal, batch-independent design must keep independent of the perturbed
  inputs: every length index <= t, and (for row >= 0) batch index != row."""
  mask = jnp.ones(shape, bool)
  for a in rec.length_axes:
    mask &= jax.lax.broadcasted_iota(jnp.int32, shape, a) <= t
  if rec.batch_axis is not None:
    mask &= (jax.lax.broadcasted_iota(jnp.int32, shape, rec.batch_axis) != row) | (row < 0)
  else:
    mask &= row < 0
  if not rec.length_axes:
    mask &= row >= 0  # no positions: only the batch test applies
  return mask


@dataclasses.dataclass
class Probes:
  """The tangents of one structural program: split points t (tangent after t on every row) and
  rows r (tangent on row r only, every position)."""
  splits: list[int]
  rows: list[int]


def split_points(length: int, sizes: list[int], key: jax.Array, n_random: int, every: bool) -> list[int]:
  if every:
    return list(range(length - 1))
  points = {0, 1, length // 2, length - 2}
  for c in sizes:
    for t in (c - 2, c - 1, c, 2 * c - 1):
      if 0 <= t < length - 1:
        points.add(t)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist())
  points.update(int(t) for t in rng.integers(0, length - 1, n_random))
  return sorted(points)


def make_program(ctx, spec, probes: Probes, chunk: int = 0):
  """`program(params, tokens, scale, key, per_array) -> (leak [K] or [1, n_arrays], total [K] or
  [1, n_arrays], primal logits)` and the list of `Recorded` (the probed program's arrays, then the
  logits), for the probed program of `spec`.

  For probe k: random cotangents on every array's checked elements (`_checked_mask`), pulled back
  to the embedding perturbation; its gradient on the perturbed positions (after t; or row r) must
  be exactly zero (`total` is the largest gradient anywhere, the scale of the FFT tolerance). With
  `per_array=k`, one pull-back per array for probe k tells which array leaks (run only to name the
  culprit).
  """
  fn, dtype = ctx.call(spec), jnp.dtype(spec.dtype)
  batch, length = spec.batch, spec.length
  found = recorded_arrays(ctx, spec)
  found.append(Recorded(None, None, frozenset(), *axes_of((batch, length, ctx.cfg.vocab_size),
                                                           batch, length)))
  t_K = jnp.asarray(probes.splits + [length] * len(probes.rows), jnp.int32)  # checked: <= t
  from_K = jnp.asarray(probes.splits + [-1] * len(probes.rows), jnp.int32)  # perturbed: > from
  r_K = jnp.asarray([-1] * len(probes.splits) + probes.rows, jnp.int32)

  def program(params, tokens_BxL, scale, key, per_array):
    x = ctx.embed(params, tokens_BxL, dtype) * jnp.asarray(scale).astype(dtype)
    delta = jnp.zeros((batch, length, spec.d_model), jnp.float32)
    pos = jnp.arange(length)[None, :, None]
    rows = jnp.arange(batch)[:, None, None]

    def f(dl):
      h, values = fn(params, x + dl.astype(dtype))
      return list(values) + [ctx.logits(params, h, dtype)]

    primal, pull = jax.vjp(f, delta)

    def cotangents(t, r, only=None):
      return [jnp.where(_checked_mask(o.shape, rec, t, r),
                        jax.random.normal(jax.random.fold_in(key, n), o.shape), 0.0).astype(o.dtype)
              if only is None or n == only else jnp.zeros(o.shape, o.dtype)
              for n, (o, rec) in enumerate(zip(primal, found))]

    def leak(t, f_, r, only=None):
      (g,) = pull(cotangents(t, r, only))
      source = (pos > f_) & ((rows == r) | (r < 0))
      mag = jnp.abs(g.astype(jnp.float32))
      mag = jnp.where(jnp.isfinite(mag), mag, 0.0)
      return jnp.stack([jnp.max(jnp.where(source, mag, 0.0), initial=0.0), jnp.max(mag, initial=0.0)])

    logits = primal[-1]
    if per_array is not None:  # probe k = per_array only, one pull-back per array: [1, N]
      k = per_array
      out = jnp.stack([leak(t_K[k], from_K[k], r_K[k], n) for n in range(len(primal))])
      return out[None, :, 0], out[None, :, 1], logits
    out = jax.lax.map(lambda a: leak(*a), (t_K, from_K, r_K), batch_size=chunk or None)
    return out[:, 0], out[:, 1], logits

  return jit(program, static_argnums=(4,)), found


def tolerance(ctx, spec) -> float:
  """0 (exact), or for a program with an FFT the relative tolerance of its rounding."""
  if not has_fft(ctx.ensure_programs(), spec):
    return 0.0
  return FFT_RTOL * float(jnp.finfo(jnp.dtype(spec.dtype)).eps)


def leaks(leak, total, rtol: float):
  """Which probes leak: a nonzero gradient (beyond `rtol` of the largest, in an FFT program)."""
  return np.asarray(leak) > rtol * np.asarray(total)


def first_leak(bad_1xN: np.ndarray, leak_1xN: np.ndarray, found: list[Recorded], probes: Probes,
               k: int) -> dict[str, Any]:
  """The first array (in execution order) that leaks at probe k (the logits if the per-array
  pull-backs, which sum to the total, round to zero one by one)."""
  bad = np.asarray(bad_1xN)[0]
  logits_n = len(found) - 1
  n = int(np.argmax(bad)) if bad.any() else logits_n
  split = k < len(probes.splits)
  rec = found[n]
  readers = []
  if rec.key is not None and rec.where is not None:
    readers = list(dict.fromkeys(str(f.where) for f in found[n + 1:]
                                 if f.where is not None and f.key is None and rec.key in f.looked_up))
  return dict(recorded=rec, split=split, t=probes.splits[k] if split else None,
              row=None if split else probes.rows[k - len(probes.splits)],
              magnitude=float(np.asarray(leak_1xN)[0].max()), readers=readers,
              logits_leak=bool(bad[logits_n]) or not bad.any())
