"""Checks 5, 6 and 9: gradients reach every parameter, nothing overflows, and a few steps learn.

All three use one train step (`make_train_step`: value_and_grad of the next-token loss, then an
AdamW update), the same step the efficiency check compiles at the rung's shapes. It takes an
`input_scale` that multiplies the token embeddings, for the large-input probe.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gab.checks.base import FAIL, PASS, Check, jit
from gab.checks.context import Context
from gab.checks.probe import Probe, describe_params, error_text, scale_embeddings
from gab.checks.structure import first_nonfinite
from gab.model import LM
from gab.tree import Unit


def optimizer(learning_rate: float) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, b1=0.9, b2=0.95, weight_decay=0.1)


def make_train_step(model: LM, opt: optax.GradientTransformation, tree: Unit):
  """`step(params, opt_state, tokens_BxL1, input_scale) -> (params, opt_state, stats)`.

  stats: the loss, and per parameter array whether its gradient is finite and whether it is nonzero.
  """
  def loss_fn(params, tokens_BxL1, input_scale):
    with Probe(tree), scale_embeddings(input_scale):
      logits_BxLxV = model.apply(params, tokens_BxL1[:, :-1])
    logp = jax.nn.log_softmax(logits_BxLxV, axis=-1)
    return -jnp.take_along_axis(logp, tokens_BxL1[:, 1:, None], axis=-1).mean()

  def step(params, opt_state, tokens_BxL1, input_scale):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens_BxL1, input_scale)
    updates, opt_state = opt.update(grads, opt_state, params)
    stats = {"loss": loss,
             "grad_finite": jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads),
             "grad_nonzero": jax.tree.map(lambda g: jnp.any(g != 0), grads)}
    return optax.apply_updates(params, updates), opt_state, stats

  return step


def training_run(ctx: Context) -> dict:
  """`train_steps` AdamW steps on the fixed batch, run once and shared by the checks."""
  if ctx.run is None:
    opt = optimizer(ctx.cfg.train_lr)
    ctx.train_step = jit(make_train_step(ctx.model, opt, ctx.tree))
    params, opt_state = ctx.params, opt.init(ctx.params)
    initial_opt_state, stats = opt_state, []
    for _ in range(ctx.cfg.train_steps):
      params, opt_state, step_stats = ctx.train_step(params, opt_state, ctx.tokens, 1.0)
      stats.append(step_stats)
    stats = jax.device_get(stats)
    ctx.run = dict(
        params=params, opt_state=initial_opt_state, losses=[float(s["loss"]) for s in stats],
        grad_finite=stats[0]["grad_finite"],
        grad_nonzero=jax.tree.map(lambda *flags: bool(np.any(flags)),
                                  *[s["grad_nonzero"] for s in stats]))
  return ctx.run


def _failing(flags, tree: Unit) -> list[str]:
  flat = jax.tree_util.tree_flatten_with_path(flags)[0]
  return describe_params([path for path, ok in flat if not ok], tree)


def _more(items: list) -> str:
  return f" (+{len(items) - 1} more)" if len(items) > 1 else ""


def check_differentiability(ctx: Context) -> Check:
  try:
    run = training_run(ctx)
  except Exception as e:  # noqa: BLE001
    return Check("differentiability", FAIL, f"backward pass failed: {error_text(e)}",
                 "use differentiable operations (no integer casts or argmax on the main path)")
  hint = "every parameter must influence the loss through differentiable operations"
  bad = _failing(run["grad_finite"], ctx.tree)
  if bad:
    return Check("differentiability", FAIL, f"gradient of {bad[0]} is NaN or Inf{_more(bad)}",
                 "stabilise the operations behind it (sqrt or log near 0, division, exp)")
  dead = _failing(run["grad_nonzero"], ctx.tree)
  if dead:
    return Check("differentiability", FAIL, f"gradient of {dead[0]} is identically zero over "
                 f"{ctx.cfg.train_steps} training steps{_more(dead)}", hint)
  n = len(jax.tree.leaves(run["grad_nonzero"]))
  return Check("differentiability", PASS, f"all {n} parameter arrays get finite gradients, nonzero "
               f"within {ctx.cfg.train_steps} training steps")


def check_stability(ctx: Context) -> Check:
  length, scale = ctx.rung.seq_len, ctx.cfg.large_input_scale
  opt_state = training_run(ctx)["opt_state"]
  for input_scale, label in ((1.0, f"at the full context length {length}"),
                             (scale, f"at length {length} with embeddings scaled x{scale:g}")):
    try:
      _, _, stats = ctx.train_step(ctx.params, opt_state, ctx.long_tokens, input_scale)
    except Exception as e:  # noqa: BLE001
      return Check("stability", FAIL, f"train step failed {label}: {error_text(e)}",
                   "make every unit work at any length up to the rung's context length")
    stats = jax.device_get(stats)
    if np.isfinite(stats["loss"]) and all(jax.tree.leaves(stats["grad_finite"])):
      continue
    hint = ("normalise before exponentials and divisions, bound decays and cumulative sums, and "
            "compute them in float32")
    if not np.isfinite(stats["loss"]):
      where = first_nonfinite(ctx, ctx.long_tokens[:, :-1], input_scale)
      return Check("stability", FAIL, f"NaN or Inf {label}, first in {where}", hint)
    bad = _failing(stats["grad_finite"], ctx.tree)
    return Check("stability", FAIL, f"gradient of {bad[0]} is NaN or Inf {label}{_more(bad)}", hint)
  return Check("stability", PASS, f"loss and gradients finite at the full context length {length}, "
               f"and with embeddings scaled x{scale:g}")


def check_effectiveness(ctx: Context) -> Check:
  losses, lr = training_run(ctx)["losses"], ctx.cfg.train_lr
  where = f"over {len(losses)} AdamW steps (lr {lr:g}) on a fixed batch"
  if not all(np.isfinite(losses)):
    step = next(i for i, x in enumerate(losses) if not np.isfinite(x))
    return Check("effectiveness", FAIL, f"loss became NaN or Inf at step {step} {where}",
                 "keep activations bounded as parameters move (normalise, bound gates and decays)")
  slope = float(np.gradient(np.asarray(losses)).mean())
  summary = f"loss {losses[0]:.3f} -> {losses[-1]:.3f} {where}, mean slope {slope:+.4f}/step"
  if slope >= 0:
    return Check("effectiveness", FAIL, f"the loss does not decrease: {summary}",
                 "make sure the block's output reaches the residual stream and its parameters "
                 "can change it (no saturating gates or vanishing scales at initialisation)")
  return Check("effectiveness", PASS, summary)
