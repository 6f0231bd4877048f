"""Input dependence: the logits depend on the tokens, and every sequence mixer mixes positions.

Both are measured by forward-mode derivatives, relative to the size of what they perturb, so a
`bias[t] + 1e-30 x` block, or a "mixer" that is position-wise, cannot pass by a rounding error.

- `dependence`: tangents on the token embeddings; the relative size of each unit call's output
  tangent (|dy| / |y|) against its input's (|dx| / |x|). The logits must move by at least
  `min_ratio` of the embeddings; when they do not, the first unit whose input moves and whose output
  does not is the culprit.
- `mixing`: a tangent on a sequence mixer's own input at positions < L - 1; its output at L - 1
  must move by at least `min_ratio` of how much its outputs at positions < L - 1 move.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import registry
from gab.checks.base import jit
from gab.checks.probe import Location, locate
from gab.checks.structural import embedding_hook
from gab.model import LM
from gab.units.base import UnitModule


def _rel(t, v):
  t, v = jnp.abs(t.astype(jnp.float32)), jnp.abs(v.astype(jnp.float32))
  return jnp.max(jnp.where(jnp.isfinite(t), t, 0.0)) / jnp.maximum(jnp.max(v), 1e-30)


def _units(tree, record, inject=None):
  """Intercept unit calls: `record(where, spec, x, y)`; `inject(i, where, spec, x) -> x`."""
  counter = [0]

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, UnitModule) or len(args) < 2:
      return next_fun(*args, **kwargs)
    found = locate(module.scope.path, tree)
    where = found[0] if found else Location(module.unit.kind, ())
    spec = registry.get(module.unit.kind)
    x = args[0]
    if inject is not None:
      x = inject(counter, where, spec, x)
    y, z = next_fun(x, *args[1:], **kwargs)
    record(where, spec, x, y)
    return y, z
  return nn.intercept_methods(intercept)


def dependence(model: LM, tree, params, tokens_BxL, key) -> tuple[float, Location | None]:
  """(relative logit change per relative embedding change, the unit that cuts the dependence)."""
  b, length = tokens_BxL.shape
  found: list[Location] = []

  def f(delta):
    pairs = []
    found.clear()

    def record(where, spec, x, y):
      found.append(where)
      pairs.append((x, y))
    with _units(tree, record), embedding_hook(delta, 1.0):
      x0 = model.apply(params, tokens_BxL, method=lambda m, t: m.embed(t))
      logits = model.apply(params, tokens_BxL)
    return logits, x0, pairs

  def program(key):
    delta = jnp.zeros((b, length, model.d_model), jnp.float32)
    tangent = jax.random.normal(key, delta.shape)
    (logits, x0, pairs), (t_logits, t_x0, t_pairs) = jax.jvp(f, (delta,), (tangent,))
    per_unit = jnp.stack([jnp.stack([_rel(tx, x), _rel(ty, y)])
                          for (x, y), (tx, ty) in zip(pairs, t_pairs)]) if pairs else jnp.zeros((0, 2))
    return _rel(t_logits, logits) / jnp.maximum(_rel(t_x0, x0), 1e-30), per_unit

  ratio, per_unit = jax.device_get(jit(program)(key))
  culprit = None
  for where, (rx, ry) in zip(found, per_unit):
    if rx > 1e-3 and ry < 1e-6 * max(rx, 1.0):
      culprit = where
      break
  return float(ratio), culprit


def mixing(model: LM, tree, params, tokens_BxL, key, min_ratio: float) -> list[tuple[Location, float]]:
  """(unit, ratio) for each sequence-mixer call whose output at L - 1 barely depends on s < L - 1."""
  b, length = tokens_BxL.shape
  mixers: list[Location] = []

  def count(where, spec, x, y):
    if spec.role == registry.MIXER and spec.is_leaf:
      mixers.append(where)
  jax.eval_shape(lambda p: _run(model, tree, p, tokens_BxL, count), params)
  if not mixers:
    return []
  n = len(mixers)

  def program(p, key):
    def f(delta_NxBxLxD):
      outs = []

      def inject(counter, where, spec, x):
        if spec.role == registry.MIXER and spec.is_leaf:
          i = counter[0]
          counter[0] += 1
          return x + delta_NxBxLxD[i].astype(x.dtype)
        return x

      def record(where, spec, x, y):
        if spec.role == registry.MIXER and spec.is_leaf:
          outs.append(y)
      with _units(tree, record, inject):
        model.apply(p, tokens_BxL)
      return outs
    zeros = jnp.zeros((n, b, length, model.d_model), jnp.float32)
    _, linear = jax.linearize(f, zeros)
    ratios = []
    past = (jnp.arange(length) < length - 1)[None, :, None]
    for i in range(n):
      noise = jax.random.normal(jax.random.fold_in(key, i), zeros.shape[1:]) * past
      tangent = zeros.at[i].set(noise)
      ty = linear(tangent)[i].astype(jnp.float32)
      last = jnp.max(jnp.abs(ty[:, -1]))
      rest = jnp.max(jnp.abs(ty[:, :-1]))
      ratios.append(last / jnp.maximum(rest, 1e-30))
    return jnp.stack(ratios)

  ratios = jax.device_get(jit(program)(params, key))
  return [(where, float(r)) for where, r in zip(mixers, ratios) if not r >= min_ratio]


def _run(model, tree, params, tokens, record):
  with _units(tree, record):
    return model.apply(params, tokens)
