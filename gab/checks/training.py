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
import numpy as np

from gab.checks.base import FAIL, PASS, Check, jit
from gab.checks.context import Context
from gab.checks.probe import describe_params, error_text
from gab.checks.steps import make_train_step, memory_limit, optimizer, training_run
from gab.checks.structure import first_nonfinite
from gab.tree import Unit


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
    scale = ctx.cfg.large_input_scale
    _, stats = ctx.train_step(run["initial_state"], ctx.tokens, scale)
    if dead[0] not in _failing(jax.device_get(stats["grad_nonzero"]), ctx.tree):
      # The path exists: with larger inputs the gradient is nonzero. At the initial scale the
      # signal through it is a product of small activations below float32's range (seen: ~1e-53
      # through an unnormalised MLP -> retention -> MLP chain inside a Gate), so training in
      # float32 never moves the parameter either; the message says which of the two it is.
      return Check("differentiability", FAIL, f"gradient of {dead[0]} underflows to exactly zero "
                   f"in float32 over {ctx.cfg.train_steps} training steps{_more(dead)} (it is "
                   f"nonzero with the embeddings scaled x{scale:g}: the signal through it vanishes, "
                   "products of small activations, rather than being cut)",
                   "normalise the inputs of multiplicative branches (a Gate's children, "
                   "retention or MLPs fed unnormalised activations) so they stay near unit scale")
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
