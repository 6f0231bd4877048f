"""Combinators: units whose behaviour is defined by their children."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import BLOCK, KindSpec, Param, Slot
from gab.units.base import UnitModule

_GATE_ACTS = {"identity": lambda x: x, "sigmoid": jax.nn.sigmoid, "silu": jax.nn.silu}


class Sequence(UnitModule):
  """Children applied one after another: y = c_n(... c_1(x))."""

  @nn.compact
  def __call__(self, x, z):
    for i in range(len(self.unit.children)):
      x, z = self.child(i)(x, z)
    return x, z


class Residual(UnitModule):
  """y = x + body(x)."""

  @nn.compact
  def __call__(self, x, z):
    y, z = self.child(0)(x, z)
    return x + y, z


class Parallel(UnitModule):
  """y = sum of the children applied to the same x; Z is threaded through them in order."""

  @nn.compact
  def __call__(self, x, z):
    total = None
    for i in range(len(self.unit.children)):
      y, z = self.child(i)(x, z)
      total = y if total is None else total + y
    return total, z


class Gate(UnitModule):
  """y = value(x) * act(gate(x)), elementwise."""

  @nn.compact
  def __call__(self, x, z):
    value, z = self.child(0)(x, z)
    gate, z = self.child(1)(x, z)
    act = _GATE_ACTS[self.hp("activation")]
    return value * act(gate.astype(jnp.float32)).astype(value.dtype), z


specs.register(KindSpec("Sequence", BLOCK, Sequence, slots=(Slot("steps", min_count=1, max_count=4),),
                           doc=Sequence.__doc__))
specs.register(KindSpec("Residual", BLOCK, Residual, slots=(Slot("body"),), doc=Residual.__doc__))
specs.register(KindSpec("Parallel", BLOCK, Parallel, slots=(Slot("branches", min_count=2, max_count=3),),
                           doc=Parallel.__doc__))
specs.register(KindSpec("Gate", BLOCK, Gate, slots=(Slot("value"), Slot("gate")),
                           params=(Param("activation", "sigmoid", tuple(_GATE_ACTS)),), doc=Gate.__doc__))
