"""Training throughput of the seed designs: `python -m genesys_jax.cli.bench [--designs=gpt,mamba2]
[--shape=cpu]`.

Each design trains for a few steps on synthetic random tokens (no data pipeline cost) with the
trainer's own step (`train.trainer.make_train_step`, AdamW from `make_optimizer`, donated state) and
prints one JSON line: size, tokens/s, seconds per step, MFU and XLA's FLOPs per step. The GPT seed
is also timed against `train.reference_gpt`, the same model written by hand, in interleaved windows
(A B B A ...) whose medians are compared, so machine load weighs on both alike: the ratio is the
cost of compiling a model from a unit tree. With `--trainer`, windows of the real training loop on
a real corpus join the interleaving (`train.bench_trainer`): `trainer_ratio` is the loop's tokens/s
over the step's.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gab import seeds
from gab.model import LM
from gab.units import attention_impl
from train import bench_trainer, metrics, trainer
from train.reference_gpt import ReferenceGPT

WARMUP_STEPS = 2


@dataclasses.dataclass(frozen=True)
class Shape:
  d_model: int
  n_blocks: int
  seq_len: int
  batch: int
  vocab: int
  dtype: str
  steps: int  # default steps per timed window


SHAPES = {
    "cpu": Shape(128, 4, 256, 8, 259, "float32", 10),
    "tiny": Shape(32, 1, 32, 2, 259, "float32", 10),
    "14m": Shape(128, 6, 2048, 32, 32000, "bfloat16", 20),
    "125m": Shape(768, 12, 2048, 16, 32000, "bfloat16", 20),
    "350m": Shape(1024, 24, 2048, 8, 32000, "bfloat16", 20),
    "r14m": Shape(128, 6, 2048, 256, 259, "bfloat16", 10),  # the paper's r14m rung, bytes
}


def bench_optimizer(total_steps: int):
  """The trainer's AdamW (warm-up, cosine, clipping, masked weight decay) at ladder-like settings."""
  rung = ml_collections.ConfigDict(dict(lr=1e-3, warmup_frac=0.02, min_lr_ratio=0.1, grad_clip=1.0,
                                        weight_decay=0.1))
  return trainer.make_optimizer(rung, total_steps)


class Runner:
  """One model's compiled, state-donating train step and its live state, ready to be timed."""

  def __init__(self, model, tokens_BxL1, optimizer, seed: int):

    def init_state(key):
      params = model.init(key, tokens_BxL1[:, :-1])
      return trainer.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params),
                                jax.random.key_data(key))
    self.tokens_BxL1 = tokens_BxL1
    self.state = jax.jit(init_state)(jax.random.key(seed))
    self.n_params = int(sum(x.size for x in jax.tree.leaves(self.state.params)))
    t0 = time.perf_counter()
    step = jax.jit(trainer.make_train_step(model, optimizer), donate_argnums=0)
    self.step = step.lower(self.state, tokens_BxL1).compile()
    self.compile_s = time.perf_counter() - t0
    cost = self.step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.xla_flops_per_step = float(cost["flops"]) if cost and "flops" in cost else None
    self.run(WARMUP_STEPS)

  def run(self, n: int) -> float:
    """Seconds for `n` steps, from a settled state to the last step's results on the host."""
    jax.block_until_ready(self.state)
    t0 = time.perf_counter()
    out = None
    for _ in range(n):
      self.state, out = self.step(self.state, self.tokens_BxL1)
    jax.block_until_ready((self.state, out))
    return time.perf_counter() - t0


def time_interleaved(runners: list[Runner], steps: int, windows: int) -> list[list[float]]:
  """Seconds of each window for each runner; windows run A B, B A, A B ... in turn."""
  seconds: list[list[float]] = [[] for _ in runners]
  for w in range(windows):
    order = range(len(runners)) if w % 2 == 0 else reversed(range(len(runners)))
    for i in order:
      seconds[i].append(runners[i].run(steps))
  return seconds


def measured_peak_flops() -> float:
  """FLOP/s of the best of several timed square bf16 matmuls (8192 on accelerators, 1024 on CPU)."""
  n, reps = (1024, 4) if jax.devices()[0].platform == "cpu" else (8192, 20)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.bfloat16)
  b = jax.random.normal(kb, (n, n), jnp.bfloat16)
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(5):
    t0 = time.perf_counter()
    outs = [matmul(a, b) for _ in range(reps)]
    jax.block_until_ready(outs)
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 * reps / best


def _design_facts(tree) -> dict[str, Any]:
  """The GPT seed's head count and MLP expansion, to size the reference identically."""
  facts = {}
  for _, unit in tree.walk():
    if unit.kind == "Attention":
      facts["n_heads"] = unit.get_param("n_heads")
    elif unit.kind == "GatedMLP":
      facts["expansion"] = unit.get_param("expansion")
  return facts


def bench_design(name: str, shape: Shape, steps: int, windows: int, peak: float | None,
                 seed: int, attention: str = "auto", corpus=None) -> dict[str, Any]:
  """The JSON record of one seed design (GPT: timed against the reference), or an error record.
  `attention`: the softmax attention kernel (gab/units/attention_impl.py). With a `corpus`
  (`train.bench_trainer.load_corpus`), the real training loop is timed too, in windows
  interleaved with the step's (`trainer_tokens_per_s`, `trainer_ratio`)."""
  if name not in seeds.SEEDS:
    return {"design": name, "error": "unknown seed"}
  tree = seeds.seed(name)
  dtype = jnp.dtype(shape.dtype)
  tokens_BxL1 = jax.random.randint(jax.random.key(seed + 1), (shape.batch, shape.seq_len + 1), 0,
                                   shape.vocab, jnp.int32)
  optimizer = bench_optimizer(WARMUP_STEPS + steps * windows)
  impl = attention
  runners = [Runner(LM(tree, shape.vocab, shape.d_model, shape.n_blocks, dtype=dtype, attention=impl),
                    tokens_BxL1, optimizer, seed)]
  if name == "gpt":
    reference = ReferenceGPT(shape.vocab, shape.d_model, shape.n_blocks, dtype=dtype, **_design_facts(tree))
    with attention_impl.use(impl):  # the reference traces (and compiles) here
      runners.append(Runner(reference, tokens_BxL1, optimizer, seed))
  if corpus is not None:
    runners.append(bench_trainer.TrainerRunner(tree, shape, corpus, seed, impl))
  seconds = time_interleaved(runners, steps, windows)
  window_s = [statistics.median(s) for s in seconds]
  tokens_per_window = shape.batch * shape.seq_len * steps
  design = runners[0]
  tok_s = tokens_per_window / window_s[0]
  flops_per_token = metrics.model_flops_per_token(design.n_params, shape.n_blocks, shape.d_model,
                                                  shape.seq_len)
  result = {
      "design": name, "params": design.n_params, "d_model": shape.d_model, "n_blocks": shape.n_blocks,
      "seq_len": shape.seq_len, "batch": shape.batch, "dtype": shape.dtype, "steps": steps,
      "windows": windows, "tokens_per_s": tok_s, "step_s": window_s[0] / steps,
      "mfu": flops_per_token * tok_s / peak if peak else None,
      "model_flops_per_token": flops_per_token, "xla_flops_per_step": design.xla_flops_per_step,
      "compile_s": design.compile_s, "device": jax.devices()[0].device_kind, "attention": impl,
  }
  if name == "gpt":
    ref = runners[1]
    ref_tok_s = tokens_per_window / window_s[1]
    window_ratios = [r / t for t, r in zip(seconds[0], seconds[1])]  # each window pair, close in time
    result.update(reference_tokens_per_s=ref_tok_s, ratio_to_reference=tok_s / ref_tok_s,
                  reference_params=ref.n_params, reference_step_s=window_s[1] / steps,
                  reference_xla_flops_per_step=ref.xla_flops_per_step,
                  ratio_window_median=statistics.median(window_ratios),
                  ratio_window_range=[min(window_ratios), max(window_ratios)])
  if corpus is not None:
    trainer_s = seconds[-1]
    trainer_ratios = [s / t for s, t in zip(seconds[0], trainer_s)]
    result.update(trainer_tokens_per_s=tokens_per_window / statistics.median(trainer_s),
                  trainer_ratio=window_s[0] / statistics.median(trainer_s),
                  trainer_ratio_window_range=[min(trainer_ratios), max(trainer_ratios)],
                  trainer_corpus=corpus.info.get("corpus"))
  return result

