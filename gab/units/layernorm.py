"""Layer normalisation (Ba et al. 2016), the norm of GPT-2 and most encoders."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import NORM, KindSpec
from gab.units.base import UnitModule


def layer_norm(x_BxLxD, scale_D, bias_D, eps: float = 1e-5):
  """Centre and scale each position's features, with statistics in float32 whatever x's dtype."""
  x32 = x_BxLxD.astype(jnp.float32)
  centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
  normed = centred * jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + eps)
  shape = (1,) * (x_BxLxD.ndim - 1) + (-1,)
  return (normed * scale_D.reshape(shape) + bias_D.reshape(shape)).astype(x_BxLxD.dtype)


class LayerNorm(UnitModule):
  """Subtract the feature mean, divide by the feature standard deviation, then a learned scale and bias."""

  @nn.compact
  def __call__(self, x_BxLxD, z):
    d = x_BxLxD.shape[-1]
    scale_D = self.param("scale", nn.initializers.ones, (d,), jnp.float32)
    bias_D = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
    return layer_norm(x_BxLxD, scale_D, bias_D), z


specs.register(KindSpec("LayerNorm", NORM, LayerNorm, doc=LayerNorm.__doc__))
