"""The post-training audit: the trained parameters must still be causal at the rung's length.

A design can pass every check at its initial and briefly trained parameters and still learn to
leak: a gate that opens as a weight grows (step ~125, say) feeds it the next token, and the loss
falls far below the data's entropy. After every verification, `audit` runs the forward replacement
test of `gab.checks.replacement` on the trained parameters with the program that was trained, at
its own batch and length (the rung's context), in its compute dtype, on real validation text:
for every split point t the tokens after t are replaced (with other validation text), and the
logits at positions <= t must be exactly what they were (within the FFT tolerance of
`gab.checks.structural` when the program has an FFT); a replaced row must not change any other.

A design whose audit finds a leak has its metrics voided and is marked leaking (see
`genesys_jax.verify`): it never reaches a leaderboard or selection.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks import replacement
from gab.checks.structural import FFT_RTOL


def audit(apply_fn: Callable, params, base_BxL: np.ndarray, noise_BxL: np.ndarray,
          dtype=jnp.float32) -> dict[str, Any]:
  """{"leaks", "max_change", "t", "row", "batch", "length", "rtol"}: the forward replacement test
  of `apply_fn(params, tokens) -> logits` (the trained program at its own [batch, length]) at
  every split point, `noise_BxL` replacing `base_BxL` after t."""
  batch, length = base_BxL.shape
  found = [replacement.OUTPUT]
  program = replacement.replacement_program(lambda p, t, s: [apply_fn(p, t)], found, batch, length)
  groups = replacement.split_groups(batch, length)
  args = (params, jnp.asarray(base_BxL, jnp.int32), jnp.asarray(noise_BxL, jnp.int32), groups, 1.0)
  lowered = jax.jit(program).lower(*args)
  fft = "stablehlo.fft" in lowered.as_text()
  rtol = FFT_RTOL * float(jnp.finfo(jnp.dtype(dtype)).eps) if fft else 0.0
  change, rows, sizes, _ = jax.device_get(lowered.compile()(*args))
  result = replacement.Result(np.asarray(change), np.asarray(rows), np.asarray(sizes), groups,
                              found, rtol)
  first = result.first()
  out = {"leaks": first is not None, "max_change": float(np.max(rows)), "batch": batch,
         "length": length, "rtol": rtol, "t": None, "row": None}
  if first is not None:
    group, row = first
    out.update(t=int(groups[group, row]), row=row, max_change=float(rows[group].max()))
  return out


def describe(result: dict[str, Any]) -> str:
  """One line for a report: what the audit found."""
  where = f"length {result['length']}, batch {result['batch']}"
  if not result["leaks"]:
    return f"no leak after training ({where}: outputs at positions <= t exactly reproduced)"
  if result["t"] < 0:
    what = f"other sequences' logits changed when only sequence {result['row']}'s tokens did"
  else:
    what = (f"the logits at positions <= {result['t']} changed when only the tokens after "
            f"{result['t']} did")
  return f"the trained parameters leak: {what} ({where}, change {result['max_change']:.1e})"


def voided(metrics: dict[str, Any]) -> dict[str, Any] | None:
  """The verification to record instead of `metrics` when their audit found a leak (None: keep
  them): no result (val_bpb, params, tokens None), the audit's finding as the error, "leaking",
  and the trained run's metrics under "voided"."""
  result = metrics.get("audit")
  if not result or not result.get("leaks"):
    return None
  return {"val_bpb": None, "params": None, "tokens": None, "error": f"audit: {describe(result)}",
          "leaking": True, "voided": metrics}
