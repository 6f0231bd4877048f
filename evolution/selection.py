"""Parent selection: which stored designs the next child is made from."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def fitness(metrics: dict[str, Any]) -> float:
  """Higher is better: negative validation bits per byte."""
  return -float(metrics["val_bpb"])


def select_parent(key: jax.Array, candidates: list[dict[str, Any]], exploit_prob: float = 0.8,
                  top_fraction: float = 0.25) -> dict[str, Any]:
  """Exploit the top quartile by fitness with probability `exploit_prob`, else explore the rest.

  `candidates` are dicts with `id` and `fitness` (None for unverified ones, which rank last), in
  creation order; ties keep that order, so the choice depends on the key and the history alone.
  """
  if not candidates:
    raise ValueError("no verified design to select a parent from")
  ranked = sorted(candidates, key=lambda c: np.inf if c["fitness"] is None else -c["fitness"])
  n_top = max(1, int(np.ceil(top_fraction * len(ranked))))
  k_mode, k_pick = jax.random.split(key)
  exploit = bool(jax.random.uniform(k_mode) < exploit_prob) or n_top == len(ranked)
  pool = ranked[:n_top] if exploit else ranked[n_top:]
  return pool[int(jax.random.randint(k_pick, (), 0, len(pool)))]
