"""`train.remat_policy="auto"`: the rematerialisation chosen per shape, the cheapest that fits.

Recomputing activations in the backward pass trades time for memory, and how much memory a step
needs depends on the design, the rung's shapes and the micro-batch. With "auto" the trainer
compiles the step ahead of time with each policy in order of recomputation (none, then
`dots_all`, `dots`, `full`: gab/model.py's REMAT_POLICIES) and trains with the first whose
compiled memory (temporaries + arguments + outputs, the donated state counted once) fits the
limit: the rung's `memory_limit_gb`, else the device's own memory, else (a CPU, which reports
none) the first. All policies compute the same step; only what is kept between the passes
differs.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from absl import logging

AUTO_ORDER = ("none", "dots_all", "dots", "full")
HEADROOM = 0.9  # of the limit: the allocator's fragmentation and the prefetched batches


def memory_limit(rung) -> float | None:
  """Bytes a step may use: the rung's `memory_limit_gb`, else this process's device's, else None."""
  if float(rung.get("memory_limit_gb", 0.0)) > 0:
    return float(rung.memory_limit_gb) * 1e9
  stats = jax.local_devices()[0].memory_stats() or {}
  return float(stats["bytes_limit"]) if stats.get("bytes_limit") else None


def step_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes)


def fitting_step(build: Callable[[Any], tuple[Any, Any]], remat, abstract_args: tuple, rung):
  """(model, step) for `remat` (False, or a policy name) as given, or, for "auto", of the first
  policy of AUTO_ORDER whose step compiled for `abstract_args` fits the `memory_limit` of `rung`
  (the compiled step is returned then). `build(remat) -> (model, jitted step)`."""
  if remat != "auto":
    return build(remat)
  limit, needs = memory_limit(rung), []
  for policy in AUTO_ORDER:
    model, step = build(policy)
    compiled = step.lower(*abstract_args).compile()
    needs.append(step_bytes(compiled))
    if limit is None or needs[-1] <= HEADROOM * limit:
      logging.info("train.remat_policy=auto: %r (%.2f GB per step)", policy, needs[-1] / 1e9)
      return model, compiled
  raise MemoryError(
      f"train.remat_policy=auto: no rematerialisation fits the step in {HEADROOM:.0%} of "
      f"{limit / 1e9:.3g} GB (" + ", ".join(f"{p}: {n / 1e9:.3g} GB" for p, n in zip(AUTO_ORDER, needs))
      + "): lower the micro-batch (rungs.*.grad_accum) or the rung's size")
