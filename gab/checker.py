"""The symbolic checker: accept a design or explain, check by check, why not.

`check(tree, cfg)` runs the checks in order and returns a `Report`; it stops at the first failed
check, since the later ones build on it (no forward pass without initialised parameters).

CLI: `python -m gab.checker --design=FILE.json` prints one JSON object
`{"passed": bool, "checks": [{"name", "status", "message", "hint"}]}` and exits 0 (passed),
1 (failed) or 2 (unusable input: unreadable file, malformed JSON).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gab import registry
from gab.model import GAB, LM, initial_z
from gab.tree import DesignError, Unit, load_design

PASS, WARN, FAIL = "pass", "warn", "fail"

# Causality tolerance. Every position's outputs are computed in float32; a strictly causal design
# gives bit-identical outputs at positions <= t when only later inputs change (masked terms add an
# exact zero), so any difference is a leak. We still allow CAUSAL_RTOL * max(1, max|output|) for
# reduction-order effects: float32 eps is 1.2e-7 and reductions here span < 1e3 terms, so
# legitimate noise stays below ~1e-6 relative, while a real leak at initialisation moves outputs by
# > 1e-3 relative (tested with attention without its mask).
CAUSAL_RTOL = 1e-5


def default_config() -> ml_collections.ConfigDict:
  """The check scale: tiny, so a full check takes seconds on a CPU."""
  return ml_collections.ConfigDict(dict(
      d_model=64, n_blocks=2, vocab_size=259, seq_len=32, batch=2, seed=0))


@dataclasses.dataclass
class Check:
  name: str
  status: str
  message: str
  hint: str = ""


@dataclasses.dataclass
class Report:
  checks: list[Check]
  sizing: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def passed(self) -> bool:
    return all(c.status != FAIL for c in self.checks)

  def failed(self) -> list[Check]:
    return [c for c in self.checks if c.status == FAIL]

  def to_dict(self) -> dict[str, Any]:
    return {"passed": self.passed, "checks": [dataclasses.asdict(c) for c in self.checks],
            "sizing": self.sizing}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  def summary(self) -> str:
    bad = self.failed()
    return "passed" if not bad else "; ".join(f"{c.name}: {c.message}" for c in bad)


class _Context:
  """What the checks share: the typed tree, the LM, its parameters and inputs."""

  def __init__(self, tree: Unit, cfg: ml_collections.ConfigDict):
    self.tree, self.cfg = tree, cfg
    self.model = LM(tree, cfg.vocab_size, cfg.d_model, cfg.n_blocks)
    rng = np.random.default_rng(cfg.seed)
    self.tokens = jnp.asarray(rng.integers(3, cfg.vocab_size, (cfg.batch, cfg.seq_len)), jnp.int32)
    self.params = None


def _check_format(ctx: _Context) -> Check:
  errors = registry.type_errors(ctx.tree)
  if errors:
    path, msg = errors[0]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Check("format", FAIL, msg + more, "use only registered kinds, fit each child to its "
                 "slot's roles and keep hyperparameters in their domains (see gab.registry)")
  ctx.tree = registry.normalize(ctx.tree)
  ctx.model = LM(ctx.tree, ctx.cfg.vocab_size, ctx.cfg.d_model, ctx.cfg.n_blocks)
  return Check("format", PASS, f"{ctx.tree.size()} units, depth {ctx.tree.depth()}")


def _check_init(ctx: _Context) -> Check:
  try:
    ctx.params = ctx.model.init(jax.random.key(ctx.cfg.seed), ctx.tokens)
  except Exception as e:  # noqa: BLE001 - any failure of a design's code is the design's
    return Check("init", FAIL, f"initialisation failed: {_one_line(e)}",
                 "check that every unit's hyperparameters fit d_model (e.g. heads divide it)")
  n = sum(x.size for x in jax.tree.leaves(ctx.params))
  return Check("init", PASS, f"{n} parameters at d_model={ctx.cfg.d_model}, n_blocks={ctx.cfg.n_blocks}")


def _check_forward(ctx: _Context) -> Check:
  try:
    logits = ctx.model.apply(ctx.params, ctx.tokens)
  except Exception as e:  # noqa: BLE001
    return Check("forward", FAIL, f"forward pass failed: {_one_line(e)}",
                 "every unit must map [batch, length, d_model] to the same shape")
  want = (ctx.cfg.batch, ctx.cfg.seq_len, ctx.cfg.vocab_size)
  if logits.shape != want:
    return Check("forward", FAIL, f"logits have shape {logits.shape}, expected {want}")
  if not bool(jnp.all(jnp.isfinite(logits))):
    return Check("forward", FAIL, "forward pass produced NaN or Inf", "look for divisions, exp or log "
                 "without stabilisation")
  return Check("forward", PASS, f"logits {want}, float32, finite")


def causal_violation(fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array) -> tuple[int, float]:
  """Perturb all positions at once: row t of a batch changes inputs after t only.

  `fn` maps [n, length, ...] to [n, length, ...]; x is one example [length, ...]. Returns the
  earliest position t whose outputs at <= t moved, and the largest relative move (0.0 if causal).
  """
  length = x.shape[0]
  noise = jax.random.normal(key, (length,) + x.shape, jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) \
      else jax.random.randint(key, (length,) + x.shape, 3, 250).astype(x.dtype)
  future_TxL = jnp.arange(length)[None, :] > jnp.arange(length)[:, None]
  mask = future_TxL.reshape(future_TxL.shape + (1,) * (x.ndim - 1))
  perturbed = jnp.where(mask, noise, x[None])
  base = fn(x[None])[0]
  out = fn(perturbed)
  diff = jnp.abs(out - base[None]).reshape(length, length, -1).max(-1)  # [t, position]
  past_TxL = ~future_TxL
  scale = max(1.0, float(jnp.abs(base).max()))
  leak = jnp.where(past_TxL, diff, 0.0) / scale
  bad = np.argwhere(np.asarray(leak) > CAUSAL_RTOL)
  if bad.size == 0:
    return -1, float(leak.max())
  return int(bad[:, 0].min()), float(leak.max())


def _culprit(tree: Unit, d_model: int, key: jax.Array, length: int) -> str:
  """The deepest subtree that leaks on its own, to point the message at a unit."""
  x = jax.random.normal(key, (length, d_model))
  z = lambda n: initial_z(jnp.zeros((n, length), jnp.int32))  # noqa: E731
  for path, unit in sorted(tree.walk(), key=lambda pu: -len(pu[0])):
    gab = GAB(unit)
    try:
      params = gab.init(key, x[None], z(1))
      t, _ = causal_violation(lambda xs, g=gab, p=params: g.apply(p, xs, z(xs.shape[0]))[0], x, key)
    except Exception:  # noqa: BLE001 - a unit that cannot run alone is not the culprit we seek
      continue
    if t >= 0:
      return f"{unit.kind} at {list(path)}"
  return "the interaction of blocks (through Z)"


def _check_causality(ctx: _Context) -> Check:
  key = jax.random.key(ctx.cfg.seed + 1)
  t, rel = causal_violation(lambda toks: ctx.model.apply(ctx.params, toks), ctx.tokens[0], key)
  if t < 0:
    return Check("causality", PASS, f"outputs at <= t unchanged by inputs after t for all "
                 f"{ctx.cfg.seq_len} positions (max relative change {rel:.1e} <= {CAUSAL_RTOL})")
  where = _culprit(ctx.tree, ctx.cfg.d_model, key, ctx.cfg.seq_len)
  return Check("causality", FAIL, f"output at position {t} depends on later tokens "
               f"(relative change {rel:.2e} > {CAUSAL_RTOL}); leak in {where}",
               "mask attention scores for future keys, pad convolutions on the left only, and "
               "make cumulative operations run forward in time")


def _check_gradient(ctx: _Context) -> Check:
  def loss_fn(params):
    logits = ctx.model.apply(params, ctx.tokens[:, :-1])
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, ctx.tokens[:, 1:, None], -1).mean()

  try:
    grads = jax.grad(loss_fn)(ctx.params)
  except Exception as e:  # noqa: BLE001
    return Check("gradient", FAIL, f"backward pass failed: {_one_line(e)}",
                 "use differentiable operations (no integer casts or argmax on the main path)")
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  bad = [(jax.tree_util.keystr(p), "not finite") for p, g in flat if not bool(jnp.all(jnp.isfinite(g)))]
  bad += [(jax.tree_util.keystr(p), "identically zero") for p, g in flat if not bool(jnp.any(g != 0))]
  if bad:
    name, why = bad[0]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return Check("gradient", FAIL, f"gradient of {name} is {why}{more}",
                 "every parameter must influence the output through differentiable operations")
  return Check("gradient", PASS, f"all {len(flat)} parameter arrays get finite, non-zero gradients")


CHECKS = (_check_format, _check_init, _check_forward, _check_causality, _check_gradient)


def check(tree: Unit, cfg: ml_collections.ConfigDict | None = None) -> Report:
  """Run the checks in order, stopping at the first failure (later checks need its result)."""
  ctx = _Context(tree, cfg or default_config())
  checks: list[Check] = []
  for fn in CHECKS:
    checks.append(fn(ctx))
    if checks[-1].status == FAIL:
      break
  return Report(checks)


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  path = flags.FLAGS.design
  try:
    tree, _ = load_design(path)
  except DesignError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  report = check(tree)
  print(report.to_json())
  return 0 if report.passed else 1


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("design", None, "Design JSON file to check (as written by gab.seeds).")
  flags.mark_flag_as_required("design")
  app.run(lambda argv: sys.exit(main(argv)))
