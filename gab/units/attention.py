"""Attention units."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import MIXER, KindSpec, Param
from gab.tree import DesignError
from gab.units import attention_impl
from gab.units.base import UnitModule


def rotary(x_BxLxHxK, positions_BxL, base: float = 10000.0):
  """Rotary position embedding (rotate-half form) applied to queries or keys."""
  half = x_BxLxHxK.shape[-1] // 2
  freqs_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BxLxK2 = positions_BxL[..., None].astype(jnp.float32) * freqs_K2[None, None, :]
  sin, cos = jnp.sin(angles_BxLxK2)[:, :, None, :], jnp.cos(angles_BxLxK2)[:, :, None, :]
  x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def head_split(d_model: int, n_heads: int, kind: str) -> int:
  if d_model % n_heads or (d_model // n_heads) % 2:
    raise DesignError(f"{kind}: d_model {d_model} must split into {n_heads} heads of even size")
  return d_model // n_heads


class Attention(UnitModule):
  """Causal multi-head self-attention with rotary positions (read from Z['positions'])."""

  @nn.compact
  def __call__(self, x_BxLxD, z):
    b, l, d = x_BxLxD.shape
    h = self.hp("n_heads")
    k = head_split(d, h, self.unit.kind)
    qkv = self.dense(3 * d, "qkv")(x_BxLxD).reshape(b, l, 3, h, k)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    positions = z["positions"]
    q_BxLxHxK = rotary(q_BxLxHxK, positions)
    k_BxLxHxK = rotary(k_BxLxHxK, positions)
    y_BxLxHxK = attention_impl.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK)
    return self.dense(d, "out", out=True)(y_BxLxHxK.reshape(b, l, d)), z


specs.register(KindSpec("Attention", MIXER, Attention, params=(Param("n_heads", 4, (1, 2, 4, 8)),),
                           reads=("positions",), doc=Attention.__doc__))
