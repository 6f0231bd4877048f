"""Training throughput of the seed designs: `python -m genesys_jax.cli.bench [--designs=gpt,mamba2]
[--shape=cpu|tiny|14m|125m|350m|r14m] [--steps=N] [--windows=5] [--measure_peak] [--attention=auto]
[--trainer [--corpus=kjv|files:GLOB] [--val_fraction=F]]`.

One JSON line per design from `train.bench.bench_design`.
"""

from __future__ import annotations

import contextlib
import json
import tempfile

import jax
from absl import app, flags, logging

from gab.units import attention_impl
from genesys_jax import cli_errors
from train import bench, bench_trainer, metrics

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list("designs", ["gpt", "mamba2", "retnet", "rwkv6", "ttt"], "Seed names to time.")
  flags.DEFINE_enum("shape", "cpu", tuple(bench.SHAPES), "Model and batch shape (see SHAPES).")
  flags.DEFINE_integer("steps", None, "Steps per timed window (default: the shape's).")
  flags.DEFINE_integer("windows", 5, "Timed windows per model; the median window counts.")
  flags.DEFINE_bool("measure_peak", False, "Time a large bf16 matmul and use it as the peak for "
                    "MFU instead of the device's nominal peak.")
  flags.DEFINE_integer("seed", 0, "Init and token seed.")
  flags.DEFINE_enum("attention", "auto", attention_impl.IMPLEMENTATIONS,
                    "Softmax attention kernel (gab/units/attention_impl.py).")
  flags.DEFINE_bool("trainer", False, "Also time the real training loop (train.trainer) on --corpus "
                    "at the same shape: trainer_tokens_per_s and trainer_ratio.")
  flags.DEFINE_string("corpus", "kjv", "With --trainer: the byte-vocabulary corpus it reads (data.corpus).")
  flags.DEFINE_float("val_fraction", None, "With --trainer: data.val_fraction of --corpus (its one "
                     "evaluation batch per window must fit in the validation split).")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  shape = bench.SHAPES[FLAGS.shape]
  steps = FLAGS.steps or shape.steps
  with contextlib.ExitStack() as stack:
    corpus = None
    if FLAGS.trainer:  # (before anything compiles: JAX looks for its cache once)
      if not jax.config.jax_compilation_cache_dir:  # each trainer window compiles its step anew
        cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_xla_"))
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
      with cli_errors.one_line_errors():
        corpus = bench_trainer.load_corpus(FLAGS.corpus, shape, FLAGS.val_fraction)
    peak, peak_source = metrics.peak_flops(), "nominal_bf16"
    if FLAGS.measure_peak:
      peak, peak_source = bench.measured_peak_flops(), "measured_bf16_matmul"
    for name in FLAGS.designs:
      print(json.dumps(_record(name, shape, steps, peak, peak_source, corpus), sort_keys=True),
            flush=True)


def _record(name, shape, steps, peak, peak_source, corpus) -> dict:
  """One design's JSON record, or its error record (one failing design must not stop the rest)."""
  try:
    result = bench.bench_design(name, shape, steps, FLAGS.windows, peak, FLAGS.seed,
                                FLAGS.attention, corpus)
  except Exception as e:  # pylint: disable=broad-except
    return {"design": name, "error": f"{type(e).__name__}: {e}"}
  if "error" not in result:
    result.update(shape=FLAGS.shape, peak_flops=peak, peak_source=peak_source if peak else None)
  return result


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
