"""Input dependence: the logits depend on the tokens, and every sequence mixer mixes positions.

Both are relative to the size of what they perturb, so a `bias[t] + 1e-30 x` block, or a "mixer"
that is position-wise, cannot pass by a rounding error. Both run the dataflow program
(`gab.checks.instrument`), in one compiled program with the forward check's float32 logits: the
logits and each unit call's input and output; the tested mixers' outputs as functions of
perturbations added to their inputs.

- `dependence`: the check batch's two token rows, which differ; the relative change of the logits
  per relative change of the embeddings must be at least `min_input_dependence`; when it is not,
  the first unit whose input changes and whose output does not is the culprit.
- `mixing`: does anything a sequence mixer outputs at other positions depend on its input at
  position 0 (or at L - 1)? Reverse mode: random cotangents on every output position but s, pulled
  back to the mixer's own input; the largest entry at s, relative to the largest overall, must be at
  least `min_ratio`. A position-wise unit gives exactly zero; a mixer whose output happens to be
  position-wise at one position for some parameters (TTT with a row scale clipped to zero) still
  mixes elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks.base import jit
from gab.checks.instrument import where_from
from gab.checks.probe import Location
from gab.programs import arg_shapes


def _rel(t, v):
  t, v = jnp.abs(t.astype(jnp.float32)), jnp.abs(v.astype(jnp.float32))
  return jnp.max(jnp.where(jnp.isfinite(t), t, 0.0)) / jnp.maximum(jnp.max(v), 1e-30)


def run(ctx, params, key) -> dict:
  """{"logits" of the check batch, "dependence", "per_unit" [calls, 2], "mixing" [mixers]}."""
  spec = ctx.plan.dataflow()
  return jax.device_get(ctx.compiled(f"dataflow {spec.key}", lambda: jit(_program(ctx, spec)))(
      params, ctx.tokens[:, :-1], key))


def _program(ctx, spec):
  _, _, mix_shape, z_shapes = arg_shapes(ctx.ensure_programs(), spec)
  fn = ctx.call(spec)
  dz = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), z_shapes)
  n, length = mix_shape.shape[0], mix_shape.shape[2]

  def program(p, tokens_BxL, key):
    x = ctx.embed(p, tokens_BxL)
    out, pull = jax.vjp(lambda dm: fn(p, x, dm, dz), jnp.zeros(mix_shape.shape, mix_shape.dtype))
    logits = ctx.logits(p, out["h"])
    rel = lambda v: _rel(v[1] - v[0], v[0])  # noqa: E731
    per_unit = (jnp.stack([jnp.stack([rel(a), rel(b)]) for a, b in out["pairs"]])
                if out["pairs"] else jnp.zeros((0, 2)))
    cot0 = jax.tree.map(jnp.zeros_like, out)

    def grad_at(i, s):
      """|d (c . y_i at every position but s) / d x_i|: [B, L, D]."""
      y = out["mix"][i]
      c = jnp.where(jnp.arange(length)[None, :, None] != s % length,
                    jax.random.normal(jax.random.fold_in(key, 2 * i + int(s != 0)), y.shape), 0.0)
      mix = [c.astype(y.dtype) if j == i else m for j, m in enumerate(cot0["mix"])]
      (g,) = pull({**cot0, "mix": mix})
      return jnp.abs(g[i].astype(jnp.float32))
    # Other positions' outputs depend on x_i[0] (a causal mixer) or on x_i[L - 1] (the wrong way:
    # causality fails it); a position-wise unit's on neither.
    ratios = [jnp.maximum(*(jnp.max(g[:, s]) / jnp.maximum(jnp.max(g), 1e-30)
                            for s, g in ((0, grad_at(i, 0)), (-1, grad_at(i, -1))))) for i in range(n)]
    return {"logits": logits, "dependence": rel(logits) / jnp.maximum(rel(x[:2]), 1e-30),
            "per_unit": per_unit, "mixing": jnp.stack(ratios) if ratios else jnp.zeros((0,))}
  return program


def dependence(ctx, result: dict) -> tuple[float, Location | None]:
  """(relative logit change per relative embedding change between the check batch's two rows,
  the first unit whose input changes and whose output does not), from `run` at the tested
  parameters."""
  calls = ctx.facts().get("dataflow", {}).get(ctx.plan.dataflow().key, {}).get("calls", [])
  per_unit = np.asarray(result["per_unit"])
  culprit = None
  if len(calls) == len(per_unit):
    for where, (rx, ry) in zip(calls, per_unit):
      if rx > 1e-3 and ry < 1e-6 * max(rx, 1.0):
        culprit = where_from(where)
        break
  return float(result["dependence"]), culprit


def mixing(ctx, result: dict, min_ratio: float) -> list[tuple[Location, float]]:
  """(unit, ratio) for each sequence-mixer call whose outputs at other positions barely depend on
  its input at position 0 or L - 1, from `run` at the tested parameters."""
  mixers = ctx.facts().get("dataflow", {}).get(ctx.plan.dataflow().key, {}).get("mixers", [])
  ratios = np.asarray(result["mixing"])
  names = [where_from(w) for w in mixers] if len(mixers) == len(ratios) else [None] * len(ratios)
  return [(where or Location("a sequence mixer", ()), float(r))
          for where, r in zip(names, ratios) if not r >= min_ratio]
