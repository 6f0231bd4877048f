"""Check 4: no output at position t, and no Z entry at t, depends on tokens after t.

One batched forward pass of the whole LM checks every position at once (the batch is built by
`structure.causal_batch`: row t + 1 differs from row 0 only after position t), so leaks through Z
across blocks show up in the logits of the blocks that read them, and in the final Z.

Tolerance: a strictly causal design gives bit-identical outputs at positions <= t when only later
tokens change (masked terms add exact zeros), so any difference is a leak. `causal_rtol` (1e-5 of
max(1, max |output|)) still allows reduction-order noise: float32 eps is 1.2e-7 and reductions here
span < 1e3 terms, while real leaks at initialisation move outputs by > 1e-3 relative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks.base import FAIL, PASS, Check, jit
from gab.checks.context import Context
from gab.checks.probe import Probe, written

HINT = ("mask attention scores for future keys, pad convolutions on the left only, run cumulative "
        "operations forward in time, and write into Z only values that depend on positions <= t")


def leak_by_t(a_NxL):
  """For each t: max |a[t + 1, s] - a[0, s]| over s <= t, relative to max(1, max |a[0]|).

  numpy in, numpy out (cheap, for the final outputs); traced in, traced out (inside `locate_leak`).
  """
  xp = np if isinstance(a_NxL, np.ndarray) else jnp
  n, length = a_NxL.shape[:2]
  a = xp.asarray(a_NxL).astype(xp.float32).reshape(n, length, -1)
  diff_TxL = xp.abs(a[1:] - a[:1]).max(-1)
  past_TxL = xp.arange(length)[None, :] <= xp.arange(length)[:, None]
  scale = xp.maximum(1.0, xp.abs(a[0]).max())
  return xp.where(past_TxL, diff_TxL, 0.0).max(-1) / scale


def check_causality(ctx: Context) -> Check:
  rtol = ctx.cfg.causal_rtol
  logits, z = jax.device_get(ctx.forward_out)
  shape = ctx.causal_tokens.shape
  outputs = [("logits", logits)] + [(f"final Z[{k!r}]", v) for k, v in sorted(z.items())
                                    if hasattr(v, "shape") and v.shape[:2] == shape]
  leaks = {name: np.asarray(leak_by_t(v)) for name, v in outputs}
  worst = max(float(per_t.max()) for per_t in leaks.values())
  bad = {name: int(np.argmax(per_t > rtol)) for name, per_t in leaks.items() if (per_t > rtol).any()}
  if not bad:
    return Check("causality", PASS, f"logits and Z entries at positions <= t unchanged when the tokens "
                 f"after t change, for every t < {shape[1]} (max relative change {worst:.1e}, "
                 f"tolerance {rtol:g})")
  name = min(bad, key=bad.get)
  t = bad[name]
  return Check("causality", FAIL, f"{name} at positions <= {t} changed when only the tokens after {t} "
               f"did (relative change {worst:.2e} > tolerance {rtol:g}); {locate_leak(ctx)}", HINT)


def locate_leak(ctx: Context) -> str:
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

  leaks = jax.device_get(jit(run)(ctx.params, ctx.causal_tokens))
  leaking = [f for f, leak in zip(found, leaks) if leak > rtol]
  if not leaking:
    return "no single unit leaks: look at how the blocks combine"
  where, key, _ = leaking[0]
  if key is None:
    return f"the leak starts in {where}, in its output"
  readers = list(dict.fromkeys(str(w) for w, k, looked in leaking if k is None and key in looked))
  read = f"; read by {', '.join(readers)}" if readers else ""
  return f"the leak starts in {where}, in the Z[{key!r}] it writes{read}"
