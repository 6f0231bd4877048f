"""Input dependence: the logits depend on the tokens, and every sequence mixer mixes positions.

Both are relative to the size of what they perturb, so a `bias[t] + 1e-30 x` block, or a "mixer"
that is position-wise, cannot pass by a rounding error.

- `dependence`: two token rows that differ; the relative change of the logits per relative change
  of the embeddings must be at least `min_input_dependence`; when it is not, the first unit whose
  input changes and whose output does not is the culprit.
- `mixing`: does anything a sequence mixer outputs at other positions depend on its input at
  position 0 (or at L - 1)? Reverse mode: random cotangents on every output position but s, pulled
  back to the mixer's own input; the largest entry at s, relative to the largest overall, must be at
  least `min_ratio`. A position-wise unit gives exactly zero; a mixer whose output happens to be
  position-wise at one position for some parameters (TTT with a row scale clipped to zero) still
  mixes elsewhere.
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


def dependence(model: LM, tree, params, tokens_2xL) -> tuple[float, Location | None]:
  """(relative logit change per relative embedding change between two token rows that differ,
  the first unit whose input changes and whose output does not)."""
  found: list[Location] = []

  def program(p):
    pairs = []
    found.clear()

    def record(where, spec, x, y):
      found.append(where)
      pairs.append((x, y))
    with _units(tree, record):
      x0 = model.apply(p, tokens_2xL, method=lambda m, t: m.embed(t))
      logits = model.apply(p, tokens_2xL)
    rel = lambda v: _rel(v[1] - v[0], v[0])  # noqa: E731
    per_unit = jnp.stack([jnp.stack([rel(x), rel(y)]) for x, y in pairs]) if pairs else jnp.zeros((0, 2))
    return rel(logits) / jnp.maximum(rel(x0), 1e-30), per_unit

  ratio, per_unit = jax.device_get(jit(program)(params))
  culprit = None
  for where, (rx, ry) in zip(found, per_unit):
    if rx > 1e-3 and ry < 1e-6 * max(rx, 1.0):
      culprit = where
      break
  return float(ratio), culprit


def is_tested(spec) -> bool:
  """Leaf sequence mixers, except those that write Z (they may mix into what they write) or read
  Z entries other than the LM's (they may get mixed values from there)."""
  from gab.checks.zrule import lm_provided  # pylint: disable=g-import-not-at-top
  return (spec.role == registry.MIXER and spec.is_leaf and not spec.writes
          and set(spec.reads) <= set(lm_provided()))


def mixing(model: LM, tree, params, tokens_BxL, key, min_ratio: float) -> list[tuple[Location, float]]:
  """(unit, ratio) for each sequence-mixer call whose outputs at other positions barely depend on
  its input at position 0 or L - 1."""
  b, length = tokens_BxL.shape
  mixers: list[Location] = []

  def count(where, spec, x, y):
    if is_tested(spec):
      mixers.append(where)
  jax.eval_shape(lambda p: _run(model, tree, p, tokens_BxL, count), params)
  if not mixers:
    return []
  n = len(mixers)

  def program(p, key):
    def f(delta_NxBxLxD):
      outs = []

      def inject(counter, where, spec, x):
        if is_tested(spec):
          i = counter[0]
          counter[0] += 1
          return x + delta_NxBxLxD[i].astype(x.dtype)
        return x

      def record(where, spec, x, y):
        if is_tested(spec):
          outs.append(y)
      with _units(tree, record, inject):
        model.apply(p, tokens_BxL)
      return outs
    zeros = jnp.zeros((n, b, length, model.d_model), jnp.float32)
    outs, pull = jax.vjp(f, zeros)  # reverse mode: units with custom VJPs are covered too
    ratios = []

    def grad_at(i, s):
      """|d (c . y_i at every position but s) / d x_i|: [B, L, D]."""
      cot = [jnp.where(jnp.arange(length)[None, :, None] != s % length,
                       jax.random.normal(jax.random.fold_in(key, 2 * i + int(s != 0)), o.shape),
                       0.0).astype(o.dtype) if j == i else jnp.zeros(o.shape, o.dtype)
             for j, o in enumerate(outs)]
      (g,) = pull(cot)
      return jnp.abs(g[i].astype(jnp.float32))
    for i in range(n):
      # Other positions' outputs depend on x_i[0] (a causal mixer) or on x_i[L - 1] (the wrong
      # way: causality fails it); a position-wise unit's on neither.
      ratios.append(jnp.maximum(*(jnp.max(g[:, s]) / jnp.maximum(jnp.max(g), 1e-30)
                                  for s, g in ((0, grad_at(i, 0)), (-1, grad_at(i, -1))))))
    return jnp.stack(ratios)

  ratios = jax.device_get(jit(program)(params, key))
  return [(where, float(r)) for where, r in zip(mixers, ratios) if not r >= min_ratio]


def _run(model, tree, params, tokens, record):
  with _units(tree, record):
    return model.apply(params, tokens)
