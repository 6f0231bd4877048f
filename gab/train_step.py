"""The train step: the state, the optimiser, the loss and `step(state, tokens) -> (state, metrics)`.

The trainer (`train.trainer`) runs this step at a rung's shapes; the checker (`gab.checks.training`)
trains through the very same step, optimiser and loss, so what it checks is what the verifier runs.
It lives here, below both, so that neither imports the other.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gab import loss as loss_lib
from gab.programs import ExportedLM


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32), saved with the state


def make_schedule(rung: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up over `warmup_frac` of the steps, then cosine down to lr x `min_lr_ratio`."""
  warmup = max(1, int(round(rung.warmup_frac * total_steps)))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=rung.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=rung.lr * rung.min_lr_ratio)


def make_optimizer(rung: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  schedule = make_schedule(rung, total_steps)
  return optax.chain(
      optax.clip_by_global_norm(rung.grad_clip),
      optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=rung.weight_decay,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))


def _features_and_head(model, params, tokens_BxL):
  """The final hidden state [B, L, d_model] and the head's weights [vocab, d_model] of an `LM` (or
  a model with the same `features` and `head_matrix` methods, as `train.reference_gpt`'s), or of a
  `gab.programs.ExportedLM` (its blocks an exported program)."""
  if isinstance(model, ExportedLM):
    return model.features(params, tokens_BxL), model.head_matrix(params)
  x_BxLxD, _ = model.apply(params, tokens_BxL, method=type(model).features)
  return x_BxLxD, model.apply(params, method=type(model).head_matrix)


def token_nll(model, params, tokens_BxL1):
  """Per-token negative log-likelihood (nats) of tokens[:, 1:] given tokens[:, :-1], the head and
  cross-entropy applied a chunk of positions at a time (gab/loss.py), so float32 logits of the
  whole batch never exist at once."""
  x_BxLxD, w_VxD = _features_and_head(model, params, tokens_BxL1[:, :-1])
  head = functools.partial(loss_lib.head_logits, w_VxD=w_VxD, dtype=jnp.dtype(model.dtype))
  return loss_lib.chunked_nll(head, x_BxLxD, tokens_BxL1[:, 1:], w_VxD.shape[0])


def mean_nll(model, params, tokens_BxL1):
  """The training loss, the mean of `token_nll`, with the head, the cross-entropy and their
  gradients fused a chunk at a time (`gab.loss.mean_nll`)."""
  x_BxLxD, w_VxD = _features_and_head(model, params, tokens_BxL1[:, :-1])
  return loss_lib.mean_nll(x_BxLxD, w_VxD, tokens_BxL1[:, 1:], jnp.dtype(model.dtype))


def make_train_step(model, optimizer: optax.GradientTransformation, grad_accum: int = 1,
                    grad_stats: bool = False):
  """`step(state, tokens_BxL1) -> (state, metrics)`; B splits into `grad_accum` micro-batches.

  With `grad_stats`, metrics also hold per parameter array whether its gradient is finite
  ("grad_finite") and nonzero ("grad_nonzero"): the checker trains through this same step."""
  grad_fn = jax.value_and_grad(lambda p, t: mean_nll(model, p, t))

  def train_step(state: TrainState, tokens_BxL1):
    if grad_accum == 1:
      loss, grads = grad_fn(state.params, tokens_BxL1)
    else:
      b = tokens_BxL1.shape[0]
      micro_AxMxL1 = tokens_BxL1.reshape(b // grad_accum, grad_accum, -1).swapaxes(0, 1)

      def accumulate(carry, micro):
        loss, grads = grad_fn(state.params, micro)
        return jax.tree.map(jnp.add, carry, (loss, grads)), None
      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro_AxMxL1)
      loss, grads = jax.tree.map(lambda x: x / grad_accum, (loss, grads))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads)}
    if grad_stats:
      out["grad_finite"] = jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)
      out["grad_nonzero"] = jax.tree.map(lambda g: jnp.any(g != 0), grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out
  return train_step
