"""Check 4: no output at position t, and no Z entry at t, depends on tokens after t, nor on the
other sequences of the batch; outputs on a prefix equal the prefix of the outputs.

Every test runs the design's exported programs (`gab.programs`) in this process; which unit leaks
is named from what the tracing recorded. Three tests, all of which must pass:

  structural   exact zero gradients (`gab.checks.structural`) of every unit output, Z entry and the
               logits at positions <= t w.r.t. the embeddings after t, and across the batch, at the
               two prime lengths, in float32 and the compute dtype, at the initial parameters, at
               randomly perturbed ones (zero-initialised gates open), at those with embeddings
               scaled x`large_input_scale` (thresholds fire) and at the parameters after the
               effectiveness steps, perturbed. Catches leaks of any size (1e-8) that gradients see.
  forward      replacement at every split point (`gab.checks.replacement`), exact, on the program
               the trainer runs (`stack`) at the rung's context length and its half, in float32 and
               the compute dtype, at the initial and trained parameters and, at the full length, at
               points that open gates: vectors and scalars driven to about +-`gate_scale`,
               matrices x`matrix_scale`; the probed program at the full length names the unit. Catches
               what gradients cannot see: a VJP that lies (`custom_vjp`), leaks through discrete
               functions, paths taken only at some lengths, dtypes or parameter magnitudes.
  prefix       the outputs on the first half of a sequence equal the first half of its outputs (at
               the rung's length, in every dtype), to `prefix_rtol` in float32 (the dtype's
               rounding otherwise: different shapes may round differently).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks import replacement, structural
from gab.checks.base import FAIL, PASS, Check, on_device
from gab.checks.context import Context

HINT = ("mask attention scores for future keys, pad convolutions on the left only, run cumulative "
        "operations forward in time, never mix sequences of the batch, and write into Z only values "
        "that depend on positions <= t of their own sequence")


def _rng(key: jax.Array) -> np.random.Generator:
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist())


def parameter_points(ctx: Context):
  """(label, params, embedding scale): where the structural tests run."""
  k1, k2 = jax.random.split(jax.random.fold_in(ctx.key, 4))
  opened = structural.perturb(ctx.params, k1)
  points = [("the initial parameters", ctx.params, 1.0),
            ("randomly perturbed parameters", opened, 1.0),
            (f"perturbed parameters with embeddings x{ctx.cfg.large_input_scale:g}", opened,
             ctx.cfg.large_input_scale)]
  trained = ctx.trained_params()
  if trained is not None:
    points.append((f"the parameters after {ctx.cfg.train_steps} training steps, perturbed",
                   structural.perturb(trained, k2), 1.0))
  return points


def gate_points(ctx: Context):
  """(label, params): parameters where magnitude- or sign-gated paths open. Vectors and scalars
  (gates, scales, thresholds, biases) are set to +-`gate_scale` x (1 + |noise|) with the sign of
  the initial value (zero: drawn), and sign-flipped; matrices are multiplied by `matrix_scale`."""
  g, m = ctx.cfg.gate_scale, ctx.cfg.matrix_scale
  rng = _rng(jax.random.fold_in(ctx.key, 5))
  params = jax.device_get(ctx.params)

  def vectors(sign):
    def move(a):
      a = np.asarray(a)
      if a.ndim > 1:
        return a
      s = np.where(a != 0, np.sign(a), rng.choice([-1.0, 1.0], a.shape))
      return (sign * g * s * (1.0 + np.abs(rng.standard_normal(a.shape)))).astype(a.dtype)
    return jax.tree.map(move, params)

  matrices = jax.tree.map(lambda a: (np.asarray(a) * (m if np.ndim(a) > 1 else 1.0)).astype(a.dtype),
                          params)
  return [(f"vectors and scalars at about {g:g} times their sign", on_device(vectors(1.0))),
          (f"vectors and scalars at about {g:g} times their sign, flipped", on_device(vectors(-1.0))),
          (f"matrices x{m:g}", on_device(matrices))]


def structural_failure(leak: dict, length: int, batch: int, dtype, label: str) -> Check:
  rec = leak["recorded"]
  what = rec.describe()
  if leak["split"]:
    t = leak["t"]
    found = (f"{'the logits' if leak['logits_leak'] else what} at positions <= {t} depend on the "
             f"tokens after {t}")
  else:
    found = (f"{'the logits' if leak['logits_leak'] else what} of other sequences of the batch "
             f"depend on sequence {leak['row']}")
  where = f"length {length}, batch {batch}, {jnp.dtype(dtype).name}, at {label}"
  start = "" if rec.where is None else f"; the leak starts in {what}"
  read = f"; read by {', '.join(leak['readers'])}" if leak["readers"] else ""
  return Check("causality", FAIL, f"{found} ({where}: a nonzero derivative {leak['magnitude']:.1e} "
               f"where a causal, batch-independent design has exactly 0){start}{read}", HINT)


def structural_tests(ctx: Context, points) -> Check | None:
  plan = ctx.plan
  for dtype in ctx.check_dtypes():
    for (length, batch), probes in plan.structural.items():
      spec = plan.structural_spec(dtype, length, batch)
      chunk = 0 if length * batch <= 512 else max(1, 4096 // (length * batch))
      program, found = ctx.compiled(f"structural {spec.key}",
                                    lambda s=spec, p=probes, c=chunk: structural.make_program(ctx, s, p, c))
      rtol = structural.tolerance(ctx, spec)
      tokens = _tokens(ctx, batch, length)
      for i, (label, params, scale) in enumerate(points):
        key = jax.random.fold_in(ctx.key, 100 + i)
        leak_K, total_K, _ = jax.device_get(program(params, tokens, scale, key, None))
        for k in np.flatnonzero(structural.leaks(leak_K, total_K, rtol)):
          # One pull-back per recorded array (the logits among them), each an exact test of its
          # own: the combined one is their sum. When every one is within tolerance, the combined
          # program's nonzero is rounding where paths cancel (seen: 2e-10 on a 17-unit scratch
          # design, across the batch), not a leak.
          leak_1xN, total_1xN, _ = jax.device_get(program(params, tokens, scale, key, int(k)))
          bad = structural.leaks(leak_1xN, total_1xN, rtol)
          if bad.any():
            leak = structural.first_leak(bad, leak_1xN, found, probes, int(k))
            return structural_failure(leak, length, batch, dtype, label)
  return None


def _tokens(ctx: Context, batch: int, length: int) -> np.ndarray:
  rng = np.random.default_rng(ctx.cfg.seed + 7)
  return rng.integers(3, ctx.cfg.vocab_size, (batch, length)).astype(np.int32)


def forward_failure(ctx: Context, spec, result: replacement.Result, label: str, params) -> Check:
  group, row = result.first()
  t = int(result.groups[group, row])
  change = float(result.rows_GxB[group].max())
  tolerance = ("exactly 0" if not result.rtol else
               f"at most {result.rtol:.1e} of its largest output (the FFT's rounding)")
  where = (f"forward, length {spec.length}, batch {spec.batch}, {spec.dtype}, at {label}: largest "
           f"change {change:.1e} where a causal, batch-independent design has {tolerance}")
  if t < 0:
    found = f"the outputs of other sequences of the batch changed when only sequence {row}'s tokens did"
  else:
    found = f"the outputs at positions <= {t} changed when only the tokens after {t} did"
  named = ctx.plan.forward(spec.dtype, ctx.rung.seq_len, probed=True)
  if spec.length != named.length:
    return Check("causality", FAIL, f"{found} ({where}); the instrumented program is traced at "
                 f"length {named.length} only: test the unit alone at length {spec.length}", HINT)
  probed = replacement.forward_test(ctx, named, params)
  culprit = probed.culprit()
  if culprit is None:
    blame = ("; no single unit's output changes in the instrumented program: look at how the blocks "
             "combine" if probed.first() is not None else
             "; the instrumented program does not leak: the design behaves differently when observed")
  else:
    blame = f"; the leak starts in {culprit.describe()}"
    readers = [str(f.where) for f in probed.found if f.where is not None and f.key is None
               and culprit.key is not None and culprit.key in f.looked_up]
    if readers:
      blame += f"; read by {', '.join(dict.fromkeys(readers))}"
  return Check("causality", FAIL, f"{found} ({where}){blame}", HINT)


def forward_tests(ctx: Context) -> tuple[Check | None, int, dict]:
  """The replacement tests; (failure, number of parameter points at the full length, the
  program's outputs at the initial parameters by (dtype, length))."""
  plan, trained = ctx.plan, ctx.trained_params()
  base = [("the initial parameters", ctx.params)]
  if trained is not None:
    base.append((f"the parameters after {ctx.cfg.train_steps} training steps", trained))
  full = base + gate_points(ctx)
  outputs = {}
  for dtype in ctx.check_dtypes():
    for length in plan.rung_lengths:
      spec = plan.forward(dtype, length)
      for i, (label, params) in enumerate(full if length == ctx.rung.seq_len else base):
        result = replacement.forward_test(ctx, spec, params)
        if result.first() is not None:
          return forward_failure(ctx, spec, result, label, params), len(full), outputs
        if i == 0:
          outputs[(dtype, length)] = result.reference
  return None, len(full), outputs


def prefix_test(ctx: Context, outputs: dict) -> Check | None:
  """The outputs on the first half of a sequence equal the first half of its outputs (the forward
  tests' unreplaced rows: the same rows at both lengths), to `prefix_rtol` in float32 and the
  dtype's rounding otherwise (two shapes may round apart)."""
  long, half = ctx.plan.rung_lengths[0], ctx.plan.rung_lengths[-1]
  if half == long:
    return None
  for dtype in ctx.check_dtypes():
    rtol = ctx.cfg.prefix_rtol if dtype == jnp.float32 else max(ctx.cfg.prefix_rtol,
                                                                8 * float(jnp.finfo(dtype).eps))
    a, b = outputs[(dtype, long)][:, :half].astype(np.float32), outputs[(dtype, half)].astype(np.float32)
    err = float(np.abs(a - b).max()) / max(1e-30, float(np.abs(a).max()))
    if not err <= rtol:
      return Check("causality", FAIL, f"the outputs of the first {half} tokens change when the "
                   f"sequence goes on to {long} tokens ({dtype.name}): relative difference "
                   f"{err:.2e} (tolerance {rtol:g}); outputs must not depend on the sequence's "
                   f"length or on the distance to its end", HINT)
  return None


def check_causality(ctx: Context) -> Check:
  points = parameter_points(ctx)
  fail = structural_tests(ctx, points)
  if fail:
    return fail
  fail, n_forward, outputs = forward_tests(ctx)
  if fail:
    return fail
  fail = prefix_test(ctx, outputs)
  if fail:
    return fail
  plan = ctx.plan
  primes = sorted(length for length, _ in plan.structural)
  dtypes = " and ".join(jnp.dtype(d).name for d in ctx.check_dtypes())
  return Check("causality", PASS, f"exactly zero derivatives of logits and of every unit output and "
               f"Z entry at positions <= t w.r.t. tokens after t, and across sequences, at lengths "
               f"{primes} in {dtypes}, at {len(points)} parameter points; outputs at positions <= t "
               f"exactly reproduced when the tokens after t are replaced, for every t, at lengths "
               f"{plan.rung_lengths} (the rung's context and its half) in {dtypes}, "
               f"at up to {n_forward} parameter points (gates opened, trained); each sequence's "
               f"outputs on its first half are the first half of its outputs")
