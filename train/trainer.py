"""Train a compiled design on one rung and evaluate it: AdamW, warm-up + cosine, clipping, Orbax.

`train_and_evaluate(tree, rung, data, ...)` is what a verifier calls; it returns the metrics the
store keeps (`val_bpb`, `params`, `tokens`, ...).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm import tqdm

from gab.model import LM, count_params
from gab.tree import Unit
from train import data as data_lib

LN2 = math.log(2.0)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(rung: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  warmup = max(1, int(round(rung.warmup_frac * total_steps)))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=rung.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=rung.lr * rung.min_lr_ratio)
  return optax.chain(
      optax.clip_by_global_norm(rung.grad_clip),
      optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=rung.weight_decay,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))


def token_nll(model: LM, params, tokens_BxL1):
  """Per-token negative log-likelihood (nats) of tokens[:, 1:] given tokens[:, :-1]."""
  logits_BxLxV = model.apply(params, tokens_BxL1[:, :-1])
  logp = jax.nn.log_softmax(logits_BxLxV, axis=-1)
  return -jnp.take_along_axis(logp, tokens_BxL1[:, 1:, None], axis=-1)[..., 0]


def make_train_step(model: LM, optimizer: optax.GradientTransformation):
  def train_step(state: TrainState, tokens_BxL1):
    def loss_fn(params):
      return token_nll(model, params, tokens_BxL1).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads)}
    return TrainState(state.step + 1, params, opt_state), metrics
  return jax.jit(train_step, donate_argnums=0)


def evaluate_bpb(model: LM, params, tokens_NxL1: np.ndarray, bytes_per_token: np.ndarray,
                 batch_size: int, max_batches: int) -> dict[str, float]:
  """Validation loss (nats/token) and bits per byte: total NLL / ln 2 / total UTF-8 bytes."""
  nll_fn = jax.jit(lambda p, t: token_nll(model, p, t))
  total_nll, total_tokens, total_bytes = 0.0, 0, 0
  for batch in data_lib.eval_batches(tokens_NxL1, batch_size, max_batches):
    nll = np.asarray(nll_fn(params, jnp.asarray(batch)), np.float64)
    total_nll += float(nll.sum())
    total_tokens += nll.size
    total_bytes += int(bytes_per_token[batch[:, 1:]].sum())
  return {"val_loss": total_nll / max(total_tokens, 1),
          "val_bpb": total_nll / LN2 / max(total_bytes, 1),
          "val_tokens": total_tokens}


def train_and_evaluate(tree: Unit, rung: ml_collections.ConfigDict, data: "data_lib.Corpus", *,
                       seed: int, checkpoint_dir: str | None = None, desc: str = "train") -> dict[str, Any]:
  """Train `tree` at the rung's size, save an Orbax checkpoint, and return metrics for the store."""
  seq_len = data.train.shape[1] - 1
  model = LM(tree, data.vocab_size, rung.d_model, rung.n_blocks)
  key = jax.random.key(seed)
  params = model.init(key, jnp.zeros((1, seq_len), jnp.int32))
  n_params = count_params(params)
  tokens_per_step = rung.batch_size * seq_len
  budget = rung.train_tokens if rung.train_tokens > 0 else n_params * rung.tokens_per_param
  steps = max(1, math.ceil(budget / tokens_per_step))
  optimizer = make_optimizer(rung, steps)
  state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  step_fn = make_train_step(model, optimizer)
  batches = data_lib.BatchIterator(data.train, rung.batch_size, seed=seed)

  losses = []
  start = time.perf_counter()
  with tqdm(total=steps, desc=desc, unit="step", leave=False, dynamic_ncols=True,
            disable=None) as bar:
    for _ in range(steps):
      state, metrics = step_fn(state, jnp.asarray(next(batches)))
      losses.append(metrics["loss"])
      bar.update(1)
      if bar.n % 10 == 0 or bar.n == steps:
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{float(metrics['loss']):.3f}",
                        tok_s=f"{bar.n * tokens_per_step / elapsed:,.0f}")
  losses = [float(x) for x in jax.device_get(losses)]
  wall = time.perf_counter() - start

  if not all(math.isfinite(x) for x in losses):
    raise FloatingPointError(f"training diverged: non-finite loss at step {losses.index(next(x for x in losses if not math.isfinite(x)))}")
  metrics = evaluate_bpb(model, state.params, data.validation, data.bytes_per_token,
                         rung.batch_size, rung.eval_batches)
  if checkpoint_dir:
    save_checkpoint(checkpoint_dir, state)
  tail = losses[-max(1, len(losses) // 10):]
  metrics.update(
      params=n_params, tokens=steps * tokens_per_step, steps=steps, d_model=rung.d_model,
      n_blocks=rung.n_blocks, train_loss=float(np.mean(tail)), first_loss=losses[0],
      train_wall_s=wall, tokens_per_s=steps * tokens_per_step / wall)
  return metrics


def save_checkpoint(directory: str, state: TrainState) -> None:
  """One Orbax checkpoint of the final train state, committed atomically."""
  directory = os.path.abspath(directory)
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=1)) as mngr:
    mngr.save(int(state.step), args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def restore_checkpoint(directory: str, like: TrainState) -> TrainState:
  with ocp.CheckpointManager(os.path.abspath(directory)) as mngr:
    return mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(like))
