"""Time the full check: the GPT seed and a few of its mutants, at the check scale.

`python -m genesys_jax.cli.bench_checker [--mutants=5] [--seed=0]` (`--code_units`:
see gab.bench_sandbox) prints one JSON line per design {"design", "wall_s", "passed",
"failed"} and then a summary line with the median wall time.
The designs are checked one after another in this process, as the evolution loop does, so the
GPT reference of the efficiency check is compiled once (its time lands on the first design).
"""

from __future__ import annotations

import json
import statistics
import time

import jax
from absl import app, flags

from evolution import operators
from gab import checker, seeds

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer("mutants", 5, "How many mutants of the GPT seed to check.")
  flags.DEFINE_integer("seed", 0, "Seed of the mutation keys.")
  flags.DEFINE_bool("code_units", False, "Instead: designs with code units, each checked in the "
                    "sandbox (gab.bench_sandbox), sandbox start included.")


def designs(n_mutants: int, seed: int):
  """("gpt", tree), then (description, tree) for mutants drawn with fixed keys."""
  gpt = seeds.seed("gpt")
  yield "gpt", gpt
  key = jax.random.key(seed)
  for i in range(n_mutants):
    child, description = operators.mutate(jax.random.fold_in(key, i), gpt)
    yield f"mutant {i}: {description}", child


def main(argv):
  del argv
  if FLAGS.code_units:
    from gab import bench_sandbox  # pylint: disable=g-import-not-at-top
    bench_sandbox.run()
    return
  walls, passed = [], 0
  for name, tree in designs(FLAGS.mutants, FLAGS.seed):
    start = time.perf_counter()
    report = checker.check(tree)
    wall = time.perf_counter() - start
    walls.append(wall)
    passed += report.passed
    print(json.dumps({"design": name, "wall_s": round(wall, 2), "passed": report.passed,
                      "failed": [c.name for c in report.failed()]}), flush=True)
  print(json.dumps({"summary": True, "designs": len(walls), "passed": passed,
                    "median_wall_s": round(statistics.median(walls), 2),
                    "max_wall_s": round(max(walls), 2)}))


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
