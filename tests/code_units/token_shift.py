"""TokenShift: mixes each position with its predecessor, per channel, then projects.

y = out((1 - mu) * x_t + mu * x_{t-1}), mu a learned per-channel mix initialised to `mix`
(x_{-1} = 0), as in RWKV's token shift.
"""
import flax.linen as nn
import jax.numpy as jnp

from gab.units.base import UnitModule

KIND = dict(
    name="TokenShift",
    role="sequence_mixer",
    params={"mix": {"default": 0.5, "domain": [0.25, 0.5, 0.75]}},
    slots=[],
    reads=[], writes=[],
)


class TokenShift(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    mu_D = self.param("mu", nn.initializers.constant(self.hp("mix")), (d,), jnp.float32)
    prev_BxLxD = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    mixed = x + mu_D.astype(x.dtype) * (prev_BxLxD - x)
    return self.dense(d, "out", out=True)(mixed), z
