"""Training throughput of the seed designs: `python -m genesys_jax.cli.bench [--designs=gpt,mamba2]
[--shape=cpu|tiny|14m|125m|350m] [--steps=N] [--windows=5] [--measure_peak] [--attention=auto]`.

One JSON line per design from `train.bench.bench_design`.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from gab.units import attention_impl
from train import bench, metrics

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


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  shape = bench.SHAPES[FLAGS.shape]
  steps = FLAGS.steps or shape.steps
  peak, peak_source = metrics.peak_flops(), "nominal_bf16"
  if FLAGS.measure_peak:
    peak, peak_source = bench.measured_peak_flops(), "measured_bf16_matmul"
  for name in FLAGS.designs:
    try:
      result = bench.bench_design(name, shape, steps, FLAGS.windows, peak, FLAGS.seed,
                                  FLAGS.attention)
    except Exception as e:  # pylint: disable=broad-except  (one failing design must not stop the rest)
      result = {"design": name, "error": f"{type(e).__name__}: {e}"}
    if "error" not in result:
      result.update(shape=FLAGS.shape, peak_flops=peak, peak_source=peak_source if peak else None)
    print(json.dumps(result, sort_keys=True), flush=True)


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
