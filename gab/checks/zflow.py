"""Which Z entries a unit really reads: exact zero derivatives w.r.t. the entries it does not declare.

`TrackedZ` sees lookups (`z[k]`, `z.get`, `in`) but not a read through `z.items()`, `z.values()` or
a copy. Here every floating Z entry a leaf unit is given but does not declare reading gets a
perturbation of its own; the gradient of that unit's output (and of the Z entries it writes)
w.r.t. it must be exactly zero, whatever the route by which the unit reached the entry.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import registry
from gab.checks.base import jit
from gab.checks.probe import locate
from gab.model import LM
from gab.units.base import UnitModule


def _float(v) -> bool:
  return hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.inexact)


def _intercept(tree, deltas, calls, outputs):
  counter = [0]

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != "__call__" or not isinstance(module, UnitModule) or len(args) < 2
        or not registry.get(module.unit.kind).is_leaf):
      return next_fun(*args, **kwargs)
    i = counter[0]
    counter[0] += 1
    spec = registry.get(module.unit.kind)
    z = dict(args[1])
    undeclared = sorted(k for k, v in z.items() if k not in spec.reads and _float(v))
    found = locate(module.scope.path, tree)
    calls.append((found[0] if found else None, undeclared,
                  {k: jax.ShapeDtypeStruct(z[k].shape, jnp.float32) for k in undeclared}))
    if deltas is not None and i < len(deltas):
      for k in undeclared:
        z[k] = z[k] + deltas[i][k].astype(z[k].dtype)
    before = dict(z)
    y, z_out = next_fun(args[0], z, *args[2:], **kwargs)
    wrote = [v for k, v in sorted(z_out.items()) if _float(v) and before.get(k) is not v]
    outputs.append([y] + wrote)
    return y, z_out
  return nn.intercept_methods(intercept)


def undeclared_reads(model: LM, tree, params, tokens_BxL) -> list[tuple]:
  """(Location, entries) for each leaf unit call whose outputs depend on Z entries it does not
  declare reading."""
  calls: list = []

  def shapes(p):
    with _intercept(tree, None, calls, []):
      model.apply(p, tokens_BxL)
  jax.eval_shape(shapes, params)
  if not any(undeclared for _, undeclared, _ in calls):
    return []
  templates = [spec for _, _, spec in calls]

  def program(p, key):
    def f(deltas):
      outputs: list = []
      with _intercept(tree, deltas, [], outputs):
        model.apply(p, tokens_BxL)
      return outputs
    zeros = [{k: jnp.zeros(s.shape, jnp.float32) for k, s in t.items()} for t in templates]
    outs, pull = jax.vjp(f, zeros)  # reverse mode: units with custom VJPs are covered too
    leaks = []
    for i, t in enumerate(templates):
      if not t:
        leaks.append(jnp.zeros(()))
        continue
      cot = [[jax.random.normal(jax.random.fold_in(key, 1000 * i + j), o.shape).astype(o.dtype)
              if n == i else jnp.zeros(o.shape, o.dtype) for j, o in enumerate(call_outs)]
             for n, call_outs in enumerate(outs)]
      (g,) = pull(cot)
      leaks.append(jnp.max(jnp.stack([jnp.max(jnp.where(jnp.isfinite(v), jnp.abs(v), 0.0))
                                      for v in g[i].values()])))
    return jnp.stack(leaks)

  leaks = jax.device_get(jit(program)(params, jax.random.key(5)))
  return [(where, undeclared) for (where, undeclared, _), leak in zip(calls, leaks) if leak > 0]
