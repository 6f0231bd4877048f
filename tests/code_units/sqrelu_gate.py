"""SqReluGate: a channel mixer with a squared-ReLU value path and a sigmoid gate.

y = down(relu(up(x))^2 * sigmoid(gate(x))), the hidden width `expansion` x d_model.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from gab.units.base import UnitModule

KIND = dict(
    name="SqReluGate",
    role="channel_mixer",
    params={"expansion": {"default": 2, "domain": [2, 3, 4]}},
    slots=[],
    reads=[], writes=[],
)


class SqReluGate(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    h = self.hp("expansion") * d
    up_BxLxH = self.dense(h, "up")(x)
    gate_BxLxH = self.dense(h, "gate")(x)
    y_BxLxH = jnp.square(jax.nn.relu(up_BxLxH)) * jax.nn.sigmoid(gate_BxLxH)
    return self.dense(d, "down", out=True)(y_BxLxH), z
