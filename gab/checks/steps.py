"""The check-scale training the checks share: the trainer's optimiser and train step (with the
large-input probe) on the design's exported program, the `train_steps` run on the fixed batch, and
the memory bound.

Below every check module (they import it; it imports none of them), so `gab.checks.context` can run
the shared training lazily and the budget and training checks share one optimiser.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gab import train_step
from gab.checks.base import jit, on_device
from gab.programs import ExportedLM


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


def training_run(ctx) -> dict:
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


def memory_limit(ctx) -> tuple[float | None, str]:
  """Bytes the step may use, and where that bound comes from."""
  if ctx.rung.memory_limit_gb > 0:
    return ctx.rung.memory_limit_gb * 1e9, f"the rung's memory_limit_gb={ctx.rung.memory_limit_gb:g}"
  device = jax.devices()[0]
  stats = device.memory_stats()
  if stats and stats.get("bytes_limit"):
    return float(stats["bytes_limit"]), f"the {device.device_kind}'s memory"
  return None, f"no memory bound: {device.platform} reports no memory size"
