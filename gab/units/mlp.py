"""Channel mixers."""

import math

import flax.linen as nn
import jax

from gab import specs
from gab.specs import CHANNEL, KindSpec, Param
from gab.units.base import UnitModule

_ACTS = {"silu": jax.nn.silu, "gelu": jax.nn.gelu}


def hidden_size(d_model: int, expansion: float, multiple: int = 8) -> int:
  return multiple * math.ceil(expansion * d_model / multiple)


class GatedMLP(UnitModule):
  """Gated MLP: down(act(gate(x)) * up(x)); SwiGLU with act=silu, GeGLU with act=gelu."""

  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    h = hidden_size(d, self.hp("expansion"))
    gate_up = self.dense(2 * h, "gate_up")(x)
    gate, up = gate_up[..., :h], gate_up[..., h:]
    y = _ACTS[self.hp("activation")](gate) * up
    return self.dense(d, "down", out=True)(y), z


specs.register(KindSpec(
    "GatedMLP", CHANNEL, GatedMLP,
    params=(Param("expansion", 2.667, (2.0, 2.667, 4.0)), Param("activation", "silu", tuple(_ACTS))),
    doc=GatedMLP.__doc__))
