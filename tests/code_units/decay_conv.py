"""DecayConv: a causal depthwise convolution whose taps fade with a learned per-channel decay.

y_t = sum_j w_j * exp(-softplus(rate) * j) * x_{t-j}, j = 0..kernel_size-1: each channel learns how
quickly its short memory fades, on top of free per-tap weights.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from gab.units.base import UnitModule
from gab.units.conv import causal_depthwise_conv

KIND = dict(
    name="DecayConv",
    role="sequence_mixer",
    params={"kernel_size": {"default": 4, "domain": [3, 4, 6, 8]}},
    slots=[],
    reads=[], writes=[],
)


class DecayConv(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    k, d = self.hp("kernel_size"), x.shape[-1]
    weight_KxD = self.param("weight", nn.initializers.normal(stddev=0.3), (k, d), jnp.float32)
    rate_D = self.param("rate", nn.initializers.zeros, (d,), jnp.float32)
    lag_K = jnp.arange(k - 1, -1, -1, dtype=jnp.float32)  # tap j of the kernel looks back k-1-j steps
    kernel_KxD = weight_KxD * jnp.exp(-jax.nn.softplus(rate_D)[None, :] * lag_K[:, None])
    return causal_depthwise_conv(x, kernel_KxD), z
