"""Short causal convolutions."""

import flax.linen as nn
import jax.numpy as jnp

from gab import registry
from gab.registry import MIXER, KindSpec, Param
from gab.units.base import UnitModule


class CausalConv(UnitModule):
  """Depthwise 1-D convolution over time, padded on the left only: y_t sees x_{t-k+1..t}."""

  @nn.compact
  def __call__(self, x, z):
    k = self.hp("kernel_size")
    d = x.shape[-1]
    conv = nn.Conv(d, kernel_size=(k,), feature_group_count=d, padding=[(k - 1, 0)], use_bias=True,
                   dtype=self.dtype, param_dtype=jnp.float32, name="conv")
    return conv(x), z


registry.register(KindSpec("CausalConv", MIXER, CausalConv,
                           params=(Param("kernel_size", 4, (2, 3, 4, 5)),), doc=CausalConv.__doc__))
