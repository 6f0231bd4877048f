"""Train a compiled design on one rung and evaluate it, sharded and resumable.

`train_and_evaluate(tree, rung, data, ...)` is what a verifier calls. It builds a mesh, shards the
train state by rules (train/sharding.py), runs a jitted AdamW step (warm-up + cosine to a minimum
ratio, global-norm clipping, gradient accumulation, bf16 compute with float32 parameters and
optimiser state), saves Orbax checkpoints (state, data position and RNG together), resumes from the
latest good one, writes TensorBoard events, audits the trained parameters for leaks (`gab.audit`,
metrics["audit"]) and returns the metrics the store keeps. The model is `gab.model.LM` of the tree
(built-in units), or the design's exported program (`gab.programs.ExportedLM`, a design with code
units: `train.sandboxed`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from gab import audit as audit_lib
from gab.model import LM, count_params
from gab.train_step import (  # noqa: F401 (re-exported: the trainer's API)
    TrainState, make_optimizer, make_schedule, make_train_step, token_nll)
from gab.tree import Unit
from train import data as data_lib
from train import metrics as metrics_lib
from train import sharding
from train import zeroshot
from train.checkpoint import Checkpointer

LN2 = math.log(2.0)


def default_train_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      dtype="float32",          # compute dtype: "bfloat16" on accelerators; parameters stay float32
      mesh=sharding.mesh_config(),
      save_every=0,             # steps between checkpoints (0: only the final one)
      max_to_keep=2,
      log_every=10,
      remat=False,              # rematerialise each block in the backward pass (saves memory)
      remat_policy="full",      # with remat: "full" (save block inputs only), "dots", "dots_all"
      attention="auto",         # softmax attention kernel: auto | xla | cudnn | pallas
      progress_every_s=30.0))   # without a terminal (no progress bar): a progress line this often


def evaluate_bpb(model: LM, params, tokens_NxL1: np.ndarray, bytes_per_token: np.ndarray,
                 batch_size: int, max_batches: int, mesh=None) -> dict[str, float]:
  """Validation loss (nats/token) and bits per byte: total NLL / ln 2 / total UTF-8 bytes."""
  mesh = mesh or sharding.make_mesh()
  table = jnp.asarray(bytes_per_token, jnp.int32)

  @jax.jit
  def sums(p, t):
    nll = token_nll(model, p, t)
    return nll.sum(), table[t[:, 1:]].sum()

  total_nll, total_bytes, total_tokens = 0.0, 0, 0
  for local in data_lib.eval_batches(tokens_NxL1, batch_size, max_batches, jax.process_index(),
                                     jax.process_count()):
    nll, n_bytes = sums(params, sharding.global_batch(local, mesh))
    total_nll += float(nll)
    total_bytes += int(n_bytes)
    total_tokens += batch_size * (tokens_NxL1.shape[1] - 1)
  return {"val_loss": total_nll / max(total_tokens, 1),
          "val_bpb": total_nll / LN2 / max(total_bytes, 1), "val_tokens": total_tokens}


def audit_tokens(data: "data_lib.Corpus", rung) -> tuple[np.ndarray, np.ndarray]:
  """Validation text at the trained program's shape (the micro-batch, the rung's context): the
  rows the audit replaces from, and the rows it replaces with."""
  batch = max(1, rung.batch_size // int(rung.get("grad_accum", 1)))
  rows = np.resize(np.arange(len(data.validation)), 2 * batch)
  windows = np.asarray(data.validation[rows], np.int32)[:, :-1]
  return windows[:batch], windows[batch:]


def train_and_evaluate(tree: Unit, rung: ml_collections.ConfigDict, data: "data_lib.Corpus", *,
                       seed: int, checkpoint_dir: str | None = None, log_dir: str | None = None,
                       train_cfg: ml_collections.ConfigDict | None = None, d_model: int | None = None,
                       n_blocks: int | None = None, desc: str = "train",
                       stop_after: int | None = None, return_state: bool = False,
                       zeroshot_cfg: ml_collections.ConfigDict | None = None,
                       model=None) -> dict[str, Any]:
  """Train `tree` at the rung (or the given sizing), resuming from `checkpoint_dir` if it holds a
  checkpoint, and return metrics for the store. `stop_after` ends early (to test resuming);
  `return_state` adds the final TrainState under "state" (not JSON: pop it before storing).
  With `zeroshot_cfg.tasks` set, the trained model is also scored on those zero-shot task files:
  `metrics["zeroshot"]` = {task: acc_norm (acc where there is none)}, details under
  `metrics["zeroshot_detail"]`. `model`, if given, is the design's `gab.programs.ExportedLM` at
  this rung's shapes (its width and depth are the sizing)."""
  cfg = train_cfg or default_train_config()
  mesh = sharding.make_mesh(cfg.mesh)
  if model is None:
    d_model, n_blocks = d_model or rung.d_model, n_blocks or rung.n_blocks
    model = LM(tree, data.vocab_size, d_model, n_blocks, dtype=jnp.dtype(cfg.dtype),
               remat=cfg.remat and cfg.get("remat_policy", "full"), attention=cfg.get("attention", "auto"))
  d_model, n_blocks = model.d_model, model.n_blocks
  seq_len = data.train.shape[1] - 1
  grad_accum = int(rung.get("grad_accum", 1))
  if rung.batch_size % (grad_accum * jax.process_count()):
    raise ValueError(f"rung batch_size {rung.batch_size} must divide by grad_accum {grad_accum} "
                     f"x {jax.process_count()} processes")

  def init_params(key):
    return model.init(key, jnp.zeros((1, seq_len), jnp.int32))
  n_params = count_params(jax.eval_shape(init_params, jax.random.key(seed)))
  tokens_per_step = rung.batch_size * seq_len
  budget = rung.train_tokens if rung.train_tokens > 0 else n_params * rung.tokens_per_param
  steps = max(1, math.ceil(budget / tokens_per_step))
  optimizer = make_optimizer(rung, steps)

  def init_state(key):
    params = init_params(key)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.key_data(key))
  key = jax.random.key(seed)
  abstract = jax.eval_shape(init_state, key)
  state_sh = sharding.param_shardings(abstract, mesh)
  batch_sh = sharding.batch_sharding(mesh)
  step_fn = jax.jit(make_train_step(model, optimizer, grad_accum), in_shardings=(state_sh, batch_sh),
                    out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)

  ckpt = Checkpointer(checkpoint_dir, cfg.max_to_keep, cfg.save_every) if checkpoint_dir else None
  restored = ckpt.restore_latest(jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)) if ckpt else None
  if restored:
    start, state, meta = restored
  else:
    start, meta = 0, {}
    state = jax.jit(init_state, out_shardings=state_sh)(key)
  # Timing accumulates over attempts in the checkpoint, so a resumed run (even one resumed from its
  # final checkpoint, with nothing left to train) reports the throughput of the steps it trained.
  prior_wall, prior_timed = float(meta.get("train_wall_s", 0.0)), int(meta.get("timed_steps", 0))
  batches = data_lib.BatchIterator(data.train, rung.batch_size, seed=seed, step=meta.get("data_step", start),
                                   process_index=jax.process_index(), process_count=jax.process_count())
  epochs = batches.epochs_at(steps)
  if epochs > 1 and jax.process_index() == 0:
    logging.warning("data: %d steps of %d sequences cover %.2f epochs of the %d train windows "
                    "(the data repeats)", steps, rung.batch_size, epochs, len(data.train))
  if log_dir and jax.process_index() == 0:
    metrics_lib.clear_events(log_dir)  # one event file per (design, rung): earlier attempts' go
  writer = metrics_lib.Writer(log_dir)
  for done in range(cfg.log_every, min(start, len(meta.get("losses", []))) + 1, cfg.log_every):
    writer.scalars(done, {"train/loss": meta["losses"][done - 1]})  # the curve up to the resume
  flops = metrics_lib.model_flops_per_token(n_params, n_blocks, d_model, seq_len)
  losses: list[float] = list(meta.get("losses", []))
  pending: list[jax.Array] = []
  end = steps if stop_after is None else min(steps, stop_after)
  t0, timed_steps, elapsed = None, 0, 0.0
  last_line = time.perf_counter()
  with tqdm(total=steps, initial=start, desc=desc, unit="step", leave=False, dynamic_ncols=True,
            disable=None) as bar:
    for step in range(start, end):
      state, out = step_fn(state, sharding.global_batch(next(batches), mesh))
      pending.append(out["loss"])
      if t0 is None:  # time from the end of the first (compiling) step
        jax.block_until_ready(out["loss"])
        t0 = time.perf_counter()
      else:
        timed_steps += 1
      bar.update(1)
      done = step + 1
      if done % cfg.log_every == 0 or done == end or (ckpt and ckpt.should_save(done, steps)):
        losses += [float(x) for x in jax.device_get(pending)]
        pending = []
        tok_s = timed_steps * tokens_per_step / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tok_s:,.0f}")
        writer.scalars(done, {"train/loss": losses[-1], "train/tokens_per_s": tok_s,
                              "train/epochs": batches.epochs_at(done)})
        if bar.disable and (done == end or time.perf_counter() - last_line >= cfg.get("progress_every_s", 30.0)):
          last_line = time.perf_counter()  # output is not a terminal: one plain line now and then
          print(f"    {desc}: step {done}/{steps}, loss {losses[-1]:.4f}, {tok_s:,.0f} tokens/s", flush=True)
        if not math.isfinite(losses[-1]):
          raise FloatingPointError(f"training diverged: loss {losses[-1]} at step {done}")
      elapsed = time.perf_counter() - t0  # the steps so far, not the checkpoint writes
      if ckpt and ckpt.should_save(done, steps):
        ckpt.save(done, state, {"data_step": batches.step, "losses": losses, "seed": seed,
                                "train_wall_s": prior_wall + elapsed,
                                "timed_steps": prior_timed + timed_steps})
  wall = prior_wall + (max(elapsed, 1e-9) if t0 is not None else 0.0)
  timed_steps += prior_timed
  if ckpt:
    ckpt.close()
  result = evaluate_bpb(model, state.params, data.validation, data.bytes_per_token,
                        rung.batch_size, rung.eval_batches, mesh)
  tok_s = timed_steps * tokens_per_step / wall if timed_steps else None
  tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
  result.update(
      params=n_params, tokens=steps * tokens_per_step, steps=steps, steps_done=end,
      d_model=d_model, n_blocks=n_blocks, train_loss=float(np.mean(tail)),
      first_loss=losses[0] if losses else None, train_wall_s=wall, tokens_per_s=tok_s,
      flops_per_token=flops, mfu=metrics_lib.mfu(flops, tok_s), epochs=epochs,
      loss_curve=[[i + 1, losses[i]] for i in range(0, len(losses), max(1, -(-len(losses) // 200)))])
  if zeroshot_cfg is not None and zeroshot_cfg.tasks:
    detail = zeroshot.evaluate_tasks(model.apply, state.params, zeroshot_cfg.tasks, data.vocab,
                                     min(zeroshot_cfg.max_len, seq_len), zeroshot_cfg.batch_size,
                                     zeroshot_cfg.limit)
    result["zeroshot"] = {t: m.get("acc_norm", m["acc"]) for t, m in detail.items()}
    result["zeroshot_detail"] = detail
    writer.scalars(end, {f"zeroshot/{t}": v for t, v in result["zeroshot"].items()})
  result["audit"] = audit_lib.audit(model.apply, state.params, *audit_tokens(data, rung), cfg.dtype)
  result["resumed_from_step"] = start  # 0: trained from scratch in this attempt
  writer.scalars(end, {"val/bpb": result["val_bpb"], "val/loss": result["val_loss"]})
  writer.close()
  if return_state:
    result["state"] = state
  return result
