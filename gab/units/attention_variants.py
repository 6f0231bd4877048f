"""Softmax-attention variants: grouped-query, sliding-window and position-free attention.

All three share one projection-attend-project path (`attend`), so they differ only in what they
are: how many key/value heads, how far back a query may look, and whether rotary positions apply.
Masking and the softmax are left to `gab.units.attention_impl` (`jax.nn.dot_product_attention`
with cuDNN on NVIDIA GPUs, a Pallas flash kernel on TPUs, XLA elsewhere).
"""

import flax.linen as nn

from gab import specs
from gab.specs import MIXER, KindSpec, Param
from gab.tree import DesignError
from gab.units import attention_impl
from gab.units.attention import head_split, rotary
from gab.units.base import UnitModule


def attend(unit: UnitModule, x_BxLxD, z, *, n_heads: int, n_kv_heads: int, use_rope: bool = True,
           window: int | None = None):
  """Causal attention with `n_kv_heads` key/value heads shared by groups of the `n_heads` queries.

  With `window`, query t attends to keys t - window + 1 .. t only. Call from a compact method: the
  projections ("qkv", "out") become parameters of `unit`.
  """
  b, l, d = x_BxLxD.shape
  k = head_split(d, n_heads, unit.unit.kind)
  if n_heads % n_kv_heads:
    raise DesignError(f"{unit.unit.kind}: n_kv_heads {n_kv_heads} must divide n_heads {n_heads}")
  qkv_BxLxF = unit.dense((n_heads + 2 * n_kv_heads) * k, "qkv")(x_BxLxD)
  q_BxLxHxK = qkv_BxLxF[..., :n_heads * k].reshape(b, l, n_heads, k)
  kv_BxLx2xGxK = qkv_BxLxF[..., n_heads * k:].reshape(b, l, 2, n_kv_heads, k)
  k_BxLxGxK, v_BxLxGxK = kv_BxLx2xGxK[:, :, 0], kv_BxLx2xGxK[:, :, 1]
  if use_rope:
    q_BxLxHxK = rotary(q_BxLxHxK, z["positions"])
    k_BxLxGxK = rotary(k_BxLxGxK, z["positions"])
  y_BxLxHxK = attention_impl.dot_product_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, window=window)
  return unit.dense(d, "out", out=True)(y_BxLxHxK.reshape(b, l, d))


class GQAttention(UnitModule):
  """Grouped-query attention (rotary): n_heads queries share n_kv_heads key/value heads.

  Fewer key/value heads shrink the KV cache and the projection cost; n_kv_heads = n_heads is
  multi-head attention and n_kv_heads = 1 multi-query attention.
  """

  @nn.compact
  def __call__(self, x_BxLxD, z):
    return attend(self, x_BxLxD, z, n_heads=self.hp("n_heads"), n_kv_heads=self.hp("n_kv_heads")), z


class SlidingWindowAttention(UnitModule):
  """Causal multi-head attention (rotary) over the last `window` positions only (the current included).

  Cost and memory per token are bounded by the window instead of growing with the context.
  """

  @nn.compact
  def __call__(self, x_BxLxD, z):
    h = self.hp("n_heads")
    return attend(self, x_BxLxD, z, n_heads=h, n_kv_heads=h, window=self.hp("window")), z


class NoPEAttention(UnitModule):
  """Causal multi-head attention with no positional encoding: order is known only through the mask."""

  @nn.compact
  def __call__(self, x_BxLxD, z):
    h = self.hp("n_heads")
    return attend(self, x_BxLxD, z, n_heads=h, n_kv_heads=h, use_rope=False), z


# Every n_kv_heads divides every n_heads, and heads of d_model / 8 >= 4 features stay even for any
# d_model that is a multiple of 32, so each combination is valid at every width.
_N_HEADS = (1, 2, 4, 8)

specs.register(KindSpec(
    "GQAttention", MIXER, GQAttention,
    params=(Param("n_heads", 4, (4, 8)), Param("n_kv_heads", 2, (1, 2, 4))),
    reads=("positions",), doc=GQAttention.__doc__))
specs.register(KindSpec(
    "SlidingWindowAttention", MIXER, SlidingWindowAttention,
    params=(Param("n_heads", 4, _N_HEADS), Param("window", 64, (16, 32, 64, 128))),
    reads=("positions",), doc=SlidingWindowAttention.__doc__))
specs.register(KindSpec(
    "NoPEAttention", MIXER, NoPEAttention, params=(Param("n_heads", 4, _N_HEADS),),
    doc=NoPEAttention.__doc__))
