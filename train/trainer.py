"""Train a compiled design on one rung and evaluate it, sharded and resumable.

`train_and_evaluate(tree, rung, data, run)` is what a verifier calls. It builds a mesh, shards the
train state by rules (train/sharding.py), runs a jitted AdamW step (warm-up + cosine to a minimum
ratio, global-norm clipping, gradient accumulation, bf16 compute with float32 parameters and
optimiser state), saves Orbax checkpoints (state, data position and RNG together), resumes from the
latest good one, writes TensorBoard events, audits the trained parameters for leaks (`gab.audit`,
metrics["audit"]) and returns the metrics the store keeps. The model is `gab.model.LM` of the tree
(built-in units), or the design's exported program (`gab.programs.ExportedLM`, a design with code
units: `train.sandboxed`).
"""

from __future__ import annotations

import dataclasses
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
from gab import fields
from gab.model import LM, count_params
from gab.train_step import (  # noqa: F401 (re-exported: the trainer's API)
    TrainState, make_optimizer, make_schedule, make_train_step, token_nll)
from gab.tree import Unit
from train import data as data_lib
from train import metrics as metrics_lib
from train import sharding
from train import step_fit
from train import zeroshot
from train.checkpoint import Checkpointer

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The `train` config section: how every verification trains (the rung says how much)."""
  dtype: str = fields.field("float32", "compute dtype (bfloat16 on accelerators); parameters stay "
                            "float32", fields.one_of("float32", "bfloat16", "float16"))
  mesh: sharding.MeshConfig = fields.section(sharding.MeshConfig, "the device mesh")
  save_every: int = fields.field(0, "steps between checkpoints (0: only the final one)",
                                 fields.integer(0), results=False)
  max_to_keep: int = fields.field(2, "checkpoints kept", fields.integer(1), results=False)
  log_every: int = fields.field(10, "steps between loss reports", fields.integer(1), results=False)
  remat: bool = fields.field(False, "rematerialise each block in the backward pass (saves memory)",
                             fields.boolean, results=False)
  remat_policy: str = fields.field(
      "full", "with remat: full (block inputs only), dots, dots_all, or auto: the cheapest that fits "
      "the memory (train/step_fit.py)", fields.one_of("full", "dots", "dots_all", "auto"), results=False)
  attention: str = fields.field("auto", "softmax attention kernel", fields.one_of(
      "auto", "xla", "cudnn", "pallas"), results=False)
  progress_every_s: float = fields.field(30.0, "without a terminal: a progress line this often",
                                         fields.number(0.0), results=False)


def default_train_config() -> ml_collections.ConfigDict:
  return fields.defaults(TrainConfig)


def evaluate_bpb(model: LM, params, tokens_NxL1: np.ndarray, bytes_per_token: np.ndarray,
                 batch_size: int, max_batches: int, mesh=None) -> dict[str, float]:
  """Validation loss (nats/token) and bits per byte: total NLL / ln 2 / total UTF-8 bytes."""
  mesh = mesh or sharding.make_mesh()
  table = jnp.asarray(bytes_per_token, jnp.int32)

  @jax.jit
  def sums(p, t):
    nll = token_nll(model, p, t)
    return nll.sum(), table[t[:, 1:]].sum()

  # Every batch is dispatched before any sum is read: the host reads the next batch meanwhile.
  per_batch = [sums(params, sharding.global_batch(local, mesh)) for local in data_lib.eval_batches(
      tokens_NxL1, batch_size, max_batches, jax.process_index(), jax.process_count())]
  fetched = jax.device_get(per_batch)
  total_nll = sum(float(nll) for nll, _ in fetched)
  total_bytes = sum(int(n_bytes) for _, n_bytes in fetched)
  total_tokens = len(per_batch) * batch_size * (tokens_NxL1.shape[1] - 1)
  return {"val_loss": total_nll / max(total_tokens, 1),
          "val_bpb": total_nll / LN2 / max(total_bytes, 1), "val_tokens": total_tokens}


@dataclasses.dataclass(frozen=True)
class Run:
  """How a training run goes, besides the design, the (sized) rung and the data."""
  seed: int = 0
  train: ml_collections.ConfigDict = dataclasses.field(default_factory=default_train_config)
  zeroshot: ml_collections.ConfigDict | None = None  # `config.zeroshot`: its tasks scored after training
  checkpoint_dir: str | None = None  # resumed from when it holds a checkpoint
  log_dir: str | None = None         # TensorBoard events
  desc: str = "train"                # the progress bar's and lines' label
  stop_after: int | None = None      # end after this step, resumable later (`cli.train --stop_after`)


def audit_tokens(data: "data_lib.Corpus", rung) -> tuple[np.ndarray, np.ndarray]:
  """Validation text at the trained program's shape (the micro-batch, the rung's context): the
  rows the audit replaces from, and the rows it replaces with."""
  batch = max(1, rung.batch_size // int(rung.get("grad_accum", 1)))
  rows = np.resize(np.arange(len(data.validation)), 2 * batch)
  windows = np.asarray(data.validation[rows], np.int32)[:, :-1]
  return windows[:batch], windows[batch:]


def train_and_evaluate(tree: Unit, rung: ml_collections.ConfigDict, data: "data_lib.Corpus",
                       run: Run | None = None, model=None) -> tuple[dict[str, Any], TrainState]:
  """(metrics for the store, final TrainState) of training `tree` at the rung's d_model and
  n_blocks (size it first: `gab.sizing.sized`), resuming from `run.checkpoint_dir` if it holds a
  checkpoint. With `run.zeroshot.tasks` set, the trained model is also scored on those zero-shot
  task files: `metrics["zeroshot"]` = {task: acc_norm (acc where there is none)}, details under
  `metrics["zeroshot_detail"]`. `model`, if given, is the design's `gab.programs.ExportedLM` at
  this rung's shapes (its width, depth and rematerialisation fixed when it was exported)."""
  run = run or Run()
  cfg, seed = run.train, run.seed
  mesh = sharding.make_mesh(cfg.mesh)
  exported = model is not None
  if not exported:
    model = LM(tree, data.vocab_size, rung.d_model, rung.n_blocks, dtype=jnp.dtype(cfg.dtype),
               attention=cfg.attention)
  d_model, n_blocks = model.d_model, model.n_blocks
  seq_len = data.train.shape[1] - 1  # data.seq_len: the data is cut into windows of it
  grad_accum = int(rung.grad_accum)
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
  abstract_sh = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                             abstract, state_sh)

  def build(remat):
    remat_model = model if exported else model.clone(remat=remat)
    return remat_model, jax.jit(
        make_train_step(remat_model, optimizer, grad_accum), in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
  model, step_fn = step_fit.fitting_step(
      build, False if exported else cfg.remat and cfg.remat_policy,
      (abstract_sh, jax.ShapeDtypeStruct((rung.batch_size, seq_len + 1), jnp.int32, sharding=batch_sh)),
      rung)

  ckpt = Checkpointer(run.checkpoint_dir, cfg.max_to_keep, cfg.save_every) if run.checkpoint_dir else None
  restored = ckpt.restore_latest(abstract_sh) if ckpt else None
  if restored:
    start, state, meta = restored
  else:
    start, meta = 0, {}
    state = jax.jit(init_state, out_shardings=state_sh)(key)
  # Timing accumulates over attempts in the checkpoint, so a resumed run (even one resumed from its
  # final checkpoint, with nothing left to train) reports the throughput of the steps it trained.
  prior_wall, prior_timed = float(meta.get("train_wall_s", 0.0)), int(meta.get("timed_steps", 0))
  batches = data_lib.BatchIterator(data.train, rung.batch_size, seed=seed,
                                   process_index=jax.process_index(), process_count=jax.process_count())
  data_offset = int(meta.get("data_step", start)) - start  # the batch of step s is data_offset + s
  epochs = batches.epochs_at(steps)
  if epochs > 1 and jax.process_index() == 0:
    logging.warning("data: %d steps of %d sequences cover %.2f epochs of the %d train windows "
                    "(the data repeats)", steps, rung.batch_size, epochs, len(data.train))
  if run.log_dir and jax.process_index() == 0:
    metrics_lib.clear_events(run.log_dir)  # one event file per (design, rung): earlier attempts' go
  writer = metrics_lib.Writer(run.log_dir)
  for done in range(cfg.log_every, min(start, len(meta.get("losses", []))) + 1, cfg.log_every):
    writer.scalars(done, {"train/loss": meta["losses"][done - 1]})  # the curve up to the resume
  flops = metrics_lib.model_flops_per_token(n_params, n_blocks, d_model, seq_len)
  losses: list[float] = list(meta.get("losses", []))
  pending: list[jax.Array] = []
  end = steps if run.stop_after is None else min(steps, run.stop_after)
  t0, timed_steps, elapsed, saving_s = None, 0, 0.0, 0.0
  last_line = time.perf_counter()
  desc = run.desc

  def batch(step: int) -> jax.Array:  # runs on the prefetch thread, ahead of the step
    return sharding.global_batch(batches.batch_at(data_offset + step), mesh)

  with tqdm(total=steps, initial=start, desc=desc, unit="step", leave=False, dynamic_ncols=True,
            disable=None) as bar, data_lib.Prefetch(batch, start) as prefetched:
    for step in range(start, end):
      state, out = step_fn(state, next(prefetched))
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
        tok_s = timed_steps * tokens_per_step / max(time.perf_counter() - t0 - saving_s, 1e-9)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tok_s:,.0f}")
        writer.scalars(done, {"train/loss": losses[-1], "train/tokens_per_s": tok_s,
                              "train/epochs": batches.epochs_at(done)})
        if bar.disable and (done == end or time.perf_counter() - last_line >= cfg.progress_every_s):
          last_line = time.perf_counter()  # output is not a terminal: one plain line now and then
          print(f"    {desc}: step {done}/{steps}, loss {losses[-1]:.4f}, {tok_s:,.0f} tokens/s", flush=True)
        if not math.isfinite(losses[-1]):
          raise FloatingPointError(f"training diverged: loss {losses[-1]} at step {done}")
      elapsed = time.perf_counter() - t0 - saving_s  # the steps so far, not the checkpoint writes
      if ckpt and ckpt.should_save(done, steps):
        ckpt.save(done, state, {"data_step": data_offset + done, "losses": losses, "seed": seed,
                                "train_wall_s": prior_wall + elapsed,
                                "timed_steps": prior_timed + timed_steps})
        saving_s = time.perf_counter() - t0 - elapsed
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
  zs = run.zeroshot
  if zs is not None and zs.tasks:
    detail = zeroshot.evaluate_tasks(model.apply, state.params, zs.tasks, data.vocab,
                                     min(zs.max_len, seq_len), zs.batch_size, zs.limit)
    result["zeroshot"] = {t: m.get("acc_norm", m["acc"]) for t, m in detail.items()}
    result["zeroshot_detail"] = detail
    writer.scalars(end, {f"zeroshot/{t}": v for t, v in result["zeroshot"].items()})
  result["audit"] = audit_lib.audit(model.apply, state.params, *audit_tokens(data, rung), cfg.dtype)
  result["resumed_from_step"] = start  # 0: trained from scratch in this attempt
  writer.scalars(end, {"val/bpb": result["val_bpb"], "val/loss": result["val_loss"]})
  writer.close()
  return result, state
