"""The seed designs evolution starts from, as unit trees.

`python -m genesys_jax.cli.seeds --out=DIR` writes each seed as a design
JSON file (the JSON the store keeps): `write_seeds`.
"""

from __future__ import annotations

import os

from gab import atomic, registry
from gab.units import mamba2, retnet, rwkv6, ttt
from gab.tree import Unit, design_to_json

U = Unit.make


def gpt() -> Unit:
  """GPT: pre-norm residual attention (rotary), then pre-norm residual gated MLP (SwiGLU)."""
  return U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U("Attention", n_heads=4)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U("GatedMLP", activation="silu")])]),
  ])


SEEDS = {"gpt": gpt, "mamba2": mamba2.seed, "retnet": retnet.seed, "rwkv6": rwkv6.seed, "ttt": ttt.seed}


def seed(name: str) -> Unit:
  if name not in SEEDS:
    raise ValueError(f"unknown seed {name!r}: expected one of {sorted(SEEDS)}")
  return registry.normalize(SEEDS[name]())


def write_seeds(out_dir: str) -> list[str]:
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name in SEEDS:
    path = os.path.join(out_dir, f"{name}.json")
    atomic.write(path, design_to_json(seed(name), name=name) + "\n")
    paths.append(path)
  return paths

