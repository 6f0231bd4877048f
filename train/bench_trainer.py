"""The real training loop, timed like the benchmarked step (`python -m genesys_jax.cli.bench --trainer`).

Each window is one `train.trainer.train_and_evaluate` run of `steps + 1` steps at the bench shape:
the trainer's own code end to end (batches of a real corpus read from its shards on the prefetch
thread, the sharded and donated step, loss logging, TensorBoard events, the final checkpoint, in a
fresh temporary workdir each time), and its time is the trainer's own figure: tokens/s from the
end of its first (compiling) step to the last step's losses on the host. `TrainerRunner.run` has
the signature of `train.bench.Runner.run`, so these windows interleave with the step's windows and
load weighs on both alike; their ratio is what the loop around the step costs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import ml_collections

from gab.tree import Unit
from train import data as data_lib
from train import trainer


def trainer_rung(shape, steps: int) -> ml_collections.ConfigDict:
  """A rung of the bench shape whose budget is exactly `steps` steps, with the ladder's optimiser."""
  return ml_collections.ConfigDict(dict(
      d_model=shape.d_model, n_blocks=shape.n_blocks, batch_size=shape.batch, seq_len=shape.seq_len,
      train_tokens=steps * shape.batch * shape.seq_len, tokens_per_param=0, lr=1e-3,
      warmup_frac=0.02, min_lr_ratio=0.1, grad_clip=1.0, weight_decay=0.1, eval_batches=1,
      grad_accum=1))


def load_corpus(corpus: str, shape, val_fraction: float | None = None) -> data_lib.Corpus:
  """The byte-vocabulary corpus `corpus` (kjv, files:GLOB, ...) in windows of the shape's length;
  `val_fraction` of its documents for validation (default: `data.val_fraction`'s)."""
  data_cfg = data_lib.default_data_config()
  data_cfg.corpus, data_cfg.seq_len = corpus, shape.seq_len
  if val_fraction is not None:
    data_cfg.val_fraction = val_fraction
  loaded = data_lib.load_corpus(data_cfg)
  if loaded.vocab_size != shape.vocab:
    raise ValueError(f"the trainer bench reads a byte corpus ({loaded.vocab_size} tokens), but this "
                     f"shape's vocabulary is {shape.vocab}: use --shape=cpu, tiny or r14m")
  return loaded


class TrainerRunner:
  """Windows of the real training loop of `tree` at `shape` on `corpus`."""

  def __init__(self, tree: Unit, shape, corpus: data_lib.Corpus, seed: int, attention: str):
    self.tree, self.shape, self.corpus, self.seed = tree, shape, corpus, seed
    self.train_cfg = trainer.default_train_config()
    self.train_cfg.dtype, self.train_cfg.attention = shape.dtype, attention

  def run(self, n: int) -> float:
    """Seconds the trainer took for `n` steps after its first, as it measured them."""
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as workdir, \
        contextlib.redirect_stdout(sys.stderr):  # its progress lines: keep stdout for JSON
      result, _ = trainer.train_and_evaluate(
          self.tree, trainer_rung(self.shape, n + 1), self.corpus, trainer.Run(
              seed=self.seed, train=self.train_cfg, checkpoint_dir=os.path.join(workdir, "checkpoints"),
              log_dir=os.path.join(workdir, "tensorboard"), desc="trainer"))
    return n * self.shape.batch * self.shape.seq_len / result["tokens_per_s"]
