"""Input dependence: the logits depend on the tokens, and every sequence mixer mixes positions.

Both are relative to the size of what they perturb, so a `bias[t] + 1e-30 x` block, or a "mixer"
that is position-wise, cannot pass by a rounding error.

- `dependence`: two token rows that differ; the relative change of the logits per relative change
  of the embeddings must be at least `min_input_dependence`; when it is not, the first unit whose
  input changes and whose output does not is the culprit.
- `mixing`: the gradient of a sequence mixer's output at L - 1 w.r.t. its own input (reverse mode);
  its largest entry at positions < L - 1 must be at least `min_ratio` of its largest overall.
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
  """(unit, ratio) for each sequence-mixer call whose output at L - 1 barely depends on s < L - 1."""
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
    def grad_of(i, t):
      cot = [jnp.zeros(o.shape, o.dtype).at[:, t].set(
                 jax.random.normal(jax.random.fold_in(key, 2 * i + int(t != 0)), o[:, t].shape).astype(o.dtype))
             if j == i else jnp.zeros(o.shape, o.dtype) for j, o in enumerate(outs)]
      (g,) = pull(cot)
      return jnp.abs(g[i].astype(jnp.float32))
    for i in range(n):
      # d y_i[L - 1] / d x_i[s]: a mixer depends on some s < L - 1, a position-wise unit on none.
      # A unit whose y[0] depends on later inputs mixes too (the wrong way: causality fails it).
      last, first = grad_of(i, -1), grad_of(i, 0)
      ratios.append(jnp.maximum(jnp.max(last[:, :-1]) / jnp.maximum(jnp.max(last), 1e-30),
                                jnp.max(first[:, 1:]) / jnp.maximum(jnp.max(first), 1e-30)))
    return jnp.stack(ratios)

  ratios = jax.device_get(jit(program)(params, key))
  return [(where, float(r)) for where, r in zip(mixers, ratios) if not r >= min_ratio]


def _run(model, tree, params, tokens, record):
  with _units(tree, record):
    return model.apply(params, tokens)
