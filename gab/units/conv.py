"""Short causal convolutions."""

import flax.linen as nn
import jax.numpy as jnp

from gab import specs
from gab.specs import MIXER, KindSpec, Param
from gab.units.base import UnitModule


def causal_depthwise_conv(x_BxLxD, kernel_KxD, bias_D=None):
  """y_t = sum_j kernel[j] * x_{t-K+1+j} (+ bias), zero before the sequence starts.

  Written as K shifted, scaled copies rather than a grouped convolution: identical results, and
  much faster than XLA's grouped convolution on CPU for the short kernels used here.
  """
  k, length = kernel_KxD.shape[0], x_BxLxD.shape[1]
  padded = jnp.pad(x_BxLxD, ((0, 0), (k - 1, 0), (0, 0)))
  y = sum(padded[:, j:j + length] * kernel_KxD[j][None, None, :].astype(x_BxLxD.dtype) for j in range(k))
  return y if bias_D is None else y + bias_D[None, None, :].astype(y.dtype)


class CausalConv(UnitModule):
  """Depthwise 1-D convolution over time, padded on the left only: y_t sees x_{t-k+1..t}."""

  @nn.compact
  def __call__(self, x, z):
    k, d = self.hp("kernel_size"), x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=0, out_axis=1), (k, d), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
    return causal_depthwise_conv(x, kernel, bias), z


specs.register(KindSpec("CausalConv", MIXER, CausalConv,
                           params=(Param("kernel_size", 4, (2, 3, 4, 5)),), doc=CausalConv.__doc__))
