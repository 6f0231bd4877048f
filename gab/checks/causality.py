"""Check 4: no output at position t, and no Z entry at t, depends on tokens after t, nor on the
other sequences of the batch; outputs on a prefix equal the prefix of the outputs.

Three tests, all of which must pass:

  structural   exact zero tangents (`gab.checks.structural`): at a short length (every split
               point t) and at a long one (longer than the rung's context and than twice every
               chunk, window and kernel shorter than the context the design declares; split
               points at chunk boundaries and drawn from the key), at two batch sizes, in float32
               and in the rung's compute dtype,
               at the initial parameters, at randomly perturbed ones (zero-initialised gates open),
               at those with embeddings scaled x`large_input_scale` (thresholds fire) and at the
               parameters after the effectiveness steps, perturbed.
  replacement  the [L + 1, L] token batch of `structure.causal_batch` (row t + 1 differs from row 0
               only after t) catches leaks through non-differentiable functions of the future. A
               causal design gives bit-identical outputs at positions <= t; `causal_rtol` (1e-5 of
               max |output|, relative at any scale) allows reduction-order noise only.
  consistency  each sequence's logits equal those of the sequence run alone, and the logits of a
               prefix equal the prefix of the logits of the whole sequence (rtol `prefix_rtol`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks import structural
from gab.checks.base import FAIL, PASS, Check, jit
from gab.checks.context import Context
from gab.checks.probe import Probe, written
from gab.model import LM

HINT = ("mask attention scores for future keys, pad convolutions on the left only, run cumulative "
        "operations forward in time, never mix sequences of the batch, and write into Z only values "
        "that depend on positions <= t of their own sequence")


def leak_by_t(a_NxL, tiny: float = 1e-30):
  """For each t: max |a[t + 1, s] - a[0, s]| over s <= t, relative to max |a[0]|.

  numpy in, numpy out (cheap, for the final outputs); traced in, traced out (inside `locate_leak`).
  """
  xp = np if isinstance(a_NxL, np.ndarray) else jnp
  n, length = a_NxL.shape[:2]
  a = xp.asarray(a_NxL).astype(xp.float32).reshape(n, length, -1)
  diff_TxL = xp.abs(a[1:] - a[:1]).max(-1)
  past_TxL = xp.arange(length)[None, :] <= xp.arange(length)[:, None]
  scale = xp.maximum(tiny, xp.abs(a[0]).max())
  return xp.where(past_TxL, diff_TxL, 0.0).max(-1) / scale


def replacement_test(ctx: Context, params, label: str) -> Check | None:
  rtol = ctx.cfg.causal_rtol
  if params is ctx.params:
    logits, z = jax.device_get(ctx.forward_out)
  else:
    logits, z = jax.device_get(ctx.forward_fn(params, ctx.causal_tokens))
  shape = ctx.causal_tokens.shape
  outputs = [("logits", logits)] + [(f"final Z[{k!r}]", v) for k, v in sorted(z.items())
                                    if hasattr(v, "shape") and v.shape[:2] == shape]
  leaks = {name: np.asarray(leak_by_t(v)) for name, v in outputs}
  ctx.causal_worst = max(ctx.causal_worst, max(float(per_t.max()) for per_t in leaks.values()))
  bad = {name: int(np.argmax(per_t > rtol)) for name, per_t in leaks.items() if (per_t > rtol).any()}
  if not bad:
    return None
  name = min(bad, key=bad.get)
  t = bad[name]
  return Check("causality", FAIL, f"{name} at positions <= {t} changed when only the tokens after {t} "
               f"did, at {label} (relative change {leaks[name].max():.2e} > tolerance {rtol:g}); "
               f"{locate_leak(ctx, params)}", HINT)


def locate_leak(ctx: Context, params) -> str:
  """The first unit call (children first) whose output or written Z entry leaks, and its readers."""
  rtol = ctx.cfg.causal_rtol
  found = []

  def run(params, tokens):
    values = []

    def record(where, x, y, z_in, z_out):
      for key, v in [(None, y)] + [(k, z_out[k]) for k in written(z_in, z_out)]:
        if hasattr(v, "shape") and v.shape[:2] == tokens.shape:
          found.append((where, key, frozenset(z_in.looked_up)))
          values.append(leak_by_t(v).max())

    with Probe(ctx.tree, record):
      ctx.model.apply(params, tokens)
    return values

  leaks = jax.device_get(jit(run)(params, ctx.causal_tokens))
  leaking = [f for f, leak in zip(found, leaks) if leak > rtol]
  if not leaking:
    return "no single unit leaks: look at how the blocks combine"
  where, key, _ = leaking[0]
  if key is None:
    return f"the leak starts in {where}, in its output"
  readers = list(dict.fromkeys(str(w) for w, k, looked in leaking if k is None and key in looked))
  read = f"; read by {', '.join(readers)}" if readers else ""
  return f"the leak starts in {where}, in the Z[{key!r}] it writes{read}"


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


def structural_failure(ctx: Context, leak: dict, length: int, batch: int, dtype, label: str) -> Check:
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


def consistency_test(ctx: Context, runs: dict) -> Check | None:
  """Row alone and prefix: logits of a sequence do not depend on the batch or on what follows."""
  rtol = ctx.cfg.prefix_rtol
  (short_len, short_b), (long_len, long_b) = sorted(runs)
  short, long = runs[(short_len, short_b)], runs[(long_len, long_b)]
  alone = np.asarray(jax.device_get(ctx.forward_plain(ctx.params, ctx.structural_tokens[:1, :short_len])))
  scale = max(1e-30, float(np.abs(short).max()))
  err_alone = float(np.abs(short[:1] - alone).max()) / scale
  err_prefix = float(np.abs(short[:long_b] - long[:, :short_len]).max()) / scale
  if err_alone > rtol:
    return Check("causality", FAIL, f"a sequence's logits change with the batch it is run in: run "
                 f"alone vs in a batch of {short_b} they differ by {err_alone:.2e} relative "
                 f"(tolerance {rtol:g}), at length {short_len}", HINT)
  if err_prefix > rtol:
    return Check("causality", FAIL, f"the logits of the first {short_len} tokens change when the "
                 f"sequence goes on to {long_len} tokens: relative difference {err_prefix:.2e} "
                 f"(tolerance {rtol:g}); outputs must not depend on the sequence's length or on "
                 f"the distance to its end", HINT)
  ctx.consistency = (err_alone, err_prefix)
  return None


def check_causality(ctx: Context) -> Check:
  ctx.causal_worst = 0.0
  points = parameter_points(ctx)
  plan = ctx.structural_plan()
  runs = {}
  for dtype in ctx.check_dtypes():
    for (length, batch), (program, found, probes) in plan.programs(dtype).items():
      tokens = ctx.structural_tokens[:batch, :length]
      for i, (label, params, scale) in enumerate(points):
        key = jax.random.fold_in(ctx.key, 100 + i)
        leak_K, logits = jax.device_get(program(params, tokens, scale, key, None))
        for k in np.flatnonzero(np.asarray(leak_K) > 0):
          # One pull-back per recorded array (the logits among them), each an exact test of its
          # own: the combined one is their sum. When every one is exactly zero, the combined
          # program's nonzero is rounding where paths cancel (seen: 2e-10 on a 17-unit scratch
          # design, across the batch), not a leak.
          leak_1xN, _ = jax.device_get(program(params, tokens, scale, key, int(k)))
          if np.any(np.asarray(leak_1xN) > 0):
            leak = structural.first_leak(np.asarray(leak_1xN), found, probes, int(k))
            return structural_failure(ctx, leak, length, batch, dtype, label)
        if i == 0 and dtype == jnp.float32:
          runs[(length, batch)] = np.asarray(logits)
  fail = replacement_test(ctx, ctx.params, "the initial parameters")
  if fail:
    return fail
  if ctx.trained_params() is not None:
    fail = replacement_test(ctx, ctx.trained_params(), "the trained parameters")
    if fail:
      return fail
  fail = consistency_test(ctx, runs)
  if fail:
    return fail
  lengths = sorted({length for length, _ in runs})
  dtypes = " and ".join(jnp.dtype(d).name for d in ctx.check_dtypes())
  return Check("causality", PASS, f"exactly zero derivatives of logits and of every unit output and "
               f"Z entry at positions <= t w.r.t. tokens after t, and across sequences, at lengths "
               f"{lengths} in {dtypes}, at {len(points)} parameter points; token replacement at "
               f"length {ctx.causal_tokens.shape[1]} max relative change {ctx.causal_worst:.1e} "
               f"(tolerance {ctx.cfg.causal_rtol:g}); each sequence equals itself run alone and "
               f"its prefix's outputs")
