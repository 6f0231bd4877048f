"""The Flax side of units: one module class per kind, built recursively from a `Unit`.

Every unit module follows the GAB contract at its own level: `y, z = module(x, z)` with
`x`/`y` of shape [batch, length, d_model] and `z` a dict of intermediate variables. `d_model` is
read from the input, so a tree compiles once and runs at any width the rung chooses.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.tree import Unit

Z = dict[str, jax.Array]


def dense_init(scale: float = 1.0):
  return nn.initializers.normal(stddev=0.02 * scale)


class UnitModule(nn.Module):
  """Base of every unit's module; subclasses implement `__call__(x, z) -> (y, z)`."""
  unit: Unit
  layer: int = 0          # index of the block this unit sits in
  n_layers: int = 1       # number of blocks in the LM (for output-projection init scaling)
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  def hp(self, name: str):
    return specs.hparam(self.unit, name)

  def child(self, i: int) -> "UnitModule":
    return build(self.unit.children[i], self.layer, self.n_layers, self.dtype, name=f"{i}_{self.unit.children[i].kind}")

  def out_init(self):
    """Init for projections that write back into the residual stream (GPT-2 style scaling)."""
    return dense_init((2 * self.n_layers) ** -0.5)

  def dense(self, features: int, name: str, *, out: bool = False, use_bias: bool = False):
    return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=self.out_init() if out else dense_init(), name=name)


def build(unit: Unit, layer: int = 0, n_layers: int = 1, dtype: Any = jnp.float32,
          name: str | None = None) -> UnitModule:
  spec = specs.spec(unit.kind)
  return spec.module(unit=unit, layer=layer, n_layers=n_layers, dtype=dtype, name=name)
