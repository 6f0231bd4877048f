"""Checks 5, 6 and 9: gradients reach every parameter, nothing overflows, and a few steps learn.

All three use the trainer's own train step (`gab.train_step.make_train_step`, its loss and its
optimiser: the step `train.trainer` runs) on the design's exported program (`gab.programs`,
through `ExportedLM`: the blocks' program and its VJP, the embedding, loss and optimiser this
process's), the same step the efficiency check compiles at the rung's shapes and the verifier runs.
It takes an `input_scale` that multiplies the token embeddings, for the large-input probe.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gab import train_step
from gab.checks.base import FAIL, PASS, Check, jit, on_device
from gab.checks.context import Context
from gab.checks.probe import describe_params, error_text
from gab.checks.structure import first_nonfinite
from gab.programs import ExportedLM
from gab.tree import Unit


def optimizer(learning_rate: float, steps: int = 10) -> optax.GradientTransformation:
  """The trainer's optimiser (`gab.train_step.make_optimizer`: clipping, AdamW with weight decay on
  matrices) at a constant learning rate after a one-step warm-up."""
  rung = ml_collections.ConfigDict(dict(lr=learning_rate, warmup_frac=0.0, min_lr_ratio=1.0,
                                        grad_clip=1.0, weight_decay=0.1))
  return train_step.make_optimizer(rung, steps)


def make_train_step(model: ExportedLM, opt: optax.GradientTransformation):
  """`step(state, tokens_BxL1, input_scale) -> (state, metrics)`: the trainer's own train step
  (`gab.train_step.make_train_step`, loss `token_nll`) with the embeddings scaled by `input_scale`
  (the large-input probe).

  metrics: the loss, the gradient norm, and per parameter array whether its gradient is finite and
  whether it is nonzero.
  """
  def step(state, tokens_BxL1, input_scale):
    inner = train_step.make_train_step(model.with_input_scale(input_scale), opt, grad_stats=True)
    return inner(state, tokens_BxL1)
  return step


def initial_state(params, opt: optax.GradientTransformation):
  return on_device(train_step.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params),
                                         jax.random.key_data(jax.random.key(0))))


def training_run(ctx: Context) -> dict:
  """`train_steps` steps on the fixed batch, run once and shared by the checks."""
  if ctx.run is None:
    opt = optimizer(ctx.cfg.train_lr, ctx.cfg.train_steps)
    ctx.train_step = jit(make_train_step(ctx.train_lm(), opt))
    state = initial = initial_state(ctx.params, opt)
    stats = []
    for _ in range(ctx.cfg.train_steps):
      state, step_stats = ctx.train_step(state, ctx.tokens, 1.0)
      stats.append(step_stats)
    stats = jax.device_get(stats)
    ctx.run = dict(
        params=state.params, initial_state=initial, losses=[float(s["loss"]) for s in stats],
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
  step = compute_dtype_step(ctx)
  if step is not None:
    _, stats = step(run["initial_state"], ctx.tokens, 1.0)
    bad = _failing(jax.device_get(stats["grad_finite"]), ctx.tree)
    if bad:
      return Check("differentiability", FAIL, f"gradient of {bad[0]} is NaN or Inf in "
                   f"{ctx.compute_dtype().name} (the rung's compute dtype){_more(bad)}",
                   "compute the operations behind it in float32 and cast back")
  dead = _failing(run["grad_nonzero"], ctx.tree)
  if dead:
    return Check("differentiability", FAIL, f"gradient of {dead[0]} is identically zero over "
                 f"{ctx.cfg.train_steps} training steps{_more(dead)}", hint)
  n = len(jax.tree.leaves(run["grad_nonzero"]))
  return Check("differentiability", PASS, f"all {n} parameter arrays get finite gradients, nonzero "
               f"within {ctx.cfg.train_steps} training steps")


def compute_dtype_step(ctx: Context):
  """The train step of the check-scale LM computing in the rung's compute dtype (None: float32)."""
  dtype = ctx.compute_dtype()
  if dtype == jnp.float32:
    return None
  if ctx.compute_step is None:
    opt = optimizer(ctx.cfg.train_lr, ctx.cfg.train_steps)
    ctx.compute_step = jit(make_train_step(ctx.train_lm(dtype), opt))
  return ctx.compute_step


def memory_failure(ctx: Context, compiled, where: str) -> Check | None:
  """Fail before running a step whose ahead-of-time memory estimate is over the limit."""
  from gab.checks.budget import memory_limit  # pylint: disable=g-import-not-at-top
  limit, source = memory_limit(ctx)
  m = compiled.memory_analysis()
  if limit is None or m is None:
    return None
  need = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes)
  if need <= limit:
    return None
  return Check("stability", FAIL, f"the check-scale train step {where} would need {need / 1e9:.3g} "
               f"GB, over {source} ({limit / 1e9:.3g} GB): not run",
               "cut activation memory: avoid materialising [L, L] or per-head [d, d] tensors per "
               "position, chunk long scans, shrink expansion factors")


def check_stability(ctx: Context) -> Check:
  length, scale = ctx.rung.seq_len, ctx.cfg.large_input_scale
  initial = training_run(ctx)["initial_state"]
  opt = optimizer(ctx.cfg.train_lr, ctx.cfg.train_steps)
  steps, compiled = [], {}
  for dtype in ctx.check_dtypes():
    in_dtype = "" if dtype == jnp.float32 else f" in {dtype.name}"
    spec = ctx.plan.forward(dtype, length)
    error = ctx.facts()["errors"].get(spec.key)
    if error:
      return Check("stability", FAIL, f"train step failed to compile at the full context length "
                   f"{length}{in_dtype}: {error}",
                   "make every unit work at any length up to the rung's context length")
    step = jit(make_train_step(ctx.lm(spec), opt))
    steps.append((step, dtype, in_dtype))
    try:  # compiled ahead of time: the memory is known before it runs
      compiled[in_dtype] = step.lower(initial, ctx.long_tokens, jnp.float32(1.0)).compile()
    except Exception as e:  # noqa: BLE001
      return Check("stability", FAIL, f"train step failed to compile at the full context length "
                   f"{length}{in_dtype}: {error_text(e)}",
                   "make every unit work at any length up to the rung's context length")
    fail = memory_failure(ctx, compiled[in_dtype], f"at length {length}{in_dtype}")
    if fail:
      return fail
  for (step, dtype, in_dtype), (input_scale, label) in itertools.product(steps, (
      (1.0, f"at the full context length {length}"),
      (scale, f"at length {length} with embeddings scaled x{scale:g}"))):
    label += in_dtype
    try:
      _, stats = compiled[in_dtype](initial, ctx.long_tokens, jnp.float32(input_scale))
    except Exception as e:  # noqa: BLE001
      return Check("stability", FAIL, f"train step failed {label}: {error_text(e)}",
                   "make every unit work at any length up to the rung's context length")
    stats = jax.device_get(stats)
    if np.isfinite(stats["loss"]) and all(jax.tree.leaves(stats["grad_finite"])):
      continue
    hint = ("normalise before exponentials and divisions, bound decays and cumulative sums, and "
            "compute them in float32")
    if not np.isfinite(stats["loss"]):
      where = first_nonfinite(ctx, ctx.long_tokens[:, :-1], input_scale, dtype)
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
