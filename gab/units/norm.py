"""Normalisation units."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import NORM, KindSpec
from gab.units.base import UnitModule


def rms_norm(x, scale, eps: float = 1e-6):
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  return (x32 * scale.reshape((1,) * (x.ndim - 1) + (-1,))).astype(x.dtype)


class RMSNorm(UnitModule):
  """Root-mean-square normalisation over features with a learned scale."""

  @nn.compact
  def __call__(self, x, z):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    return rms_norm(x, scale), z


specs.register(KindSpec("RMSNorm", NORM, RMSNorm, doc=RMSNorm.__doc__))
