"""Ungated channel mixers: the classic two-matrix MLP of GPT-2 (gelu) and Primer (squared ReLU)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import CHANNEL, KindSpec, Param
from gab.units.base import UnitModule
from gab.units.mlp import hidden_size

ACTIVATIONS = {
    "gelu": jax.nn.gelu,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "silu": jax.nn.silu,
}


class MLP(UnitModule):
  """down(act(up(x))): two matrices with a hidden width of expansion * d_model.

  For the gated forms (SwiGLU, GeGLU) use GatedMLP.
  """

  @nn.compact
  def __call__(self, x_BxLxD, z):
    d = x_BxLxD.shape[-1]
    hidden_BxLxF = self.dense(hidden_size(d, self.hp("expansion")), "up")(x_BxLxD)
    hidden_BxLxF = ACTIVATIONS[self.hp("activation")](hidden_BxLxF)
    return self.dense(d, "down", out=True)(hidden_BxLxF), z


specs.register(KindSpec(
    "MLP", CHANNEL, MLP,
    params=(Param("expansion", 4.0, (2.0, 4.0)), Param("activation", "gelu", tuple(ACTIVATIONS))),
    doc=MLP.__doc__))
