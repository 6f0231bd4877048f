"""Which Z entries a unit really reads: exact zero derivatives w.r.t. the entries it does not declare.

`TrackedZ` sees lookups (`z[k]`, `z.get`, `in`) but not a read through `z.items()`, `z.values()` or
a copy. The dataflow program (`gab.checks.instrument`) adds a perturbation of its own to every
float Z entry a leaf unit is given but does not declare reading; the gradient of that unit's output
(and of the Z entries it writes) w.r.t. it must be exactly zero, whatever the route by which the
unit reached the entry. The gradient is the program's exported VJP, computed here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gab.checks.base import jit
from gab.checks.instrument import where_from
from gab.programs import arg_shapes


def undeclared_reads(ctx, params) -> list[tuple]:
  """(Location, entries) for each leaf unit call whose outputs depend on Z entries it does not
  declare reading."""
  spec = ctx.plan.dataflow()
  zcalls = ctx.facts().get("dataflow", {}).get(spec.key, {}).get("zcalls", [])
  if not zcalls:
    return []
  _, _, mix_shape, z_shapes = arg_shapes(ctx.ensure_programs(), spec)
  fn = ctx.call(spec)
  zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)  # noqa: E731

  def program(p, tokens, key):
    x = ctx.embed(p, tokens)
    outs, pull = jax.vjp(lambda dz: fn(p, x, zeros(mix_shape), dz)["z"], zeros(z_shapes))
    leaks = []
    for i, d_i in enumerate(z_shapes):
      cot = [[jax.random.normal(jax.random.fold_in(key, 1000 * i + j), o.shape).astype(o.dtype)
              if n == i else jnp.zeros(o.shape, o.dtype) for j, o in enumerate(call_outs)]
             for n, call_outs in enumerate(outs)]
      (g,) = pull(cot)
      leaks.append(jnp.max(jnp.stack([jnp.max(jnp.where(jnp.isfinite(v), jnp.abs(v), 0.0))
                                      for v in g[i].values()])))
    return jnp.stack(leaks)

  leaks = jax.device_get(jit(program)(params, ctx.tokens[:, :-1], jax.random.key(5)))
  return [(where_from(where), entries) for (where, entries), leak in zip(zcalls, leaks) if leak > 0]
