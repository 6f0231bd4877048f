"""Linear attention: softmax replaced by a feature map, so causal attention becomes a running state.

With feature-mapped queries and keys, o_t = phi(q_t) S_t where S_t = sum_{s <= t} phi(k_s)^T v_s.
`chunked_linear_attention` computes this in the form accelerators like: within a chunk of C
positions a masked C x C matmul, across chunks a cumulative sum of per-chunk K x V states, with no
loop over time. `linear_attention_recurrence` is the step-by-step definition the tests hold it to.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import MIXER, KindSpec, Param
from gab.units.attention import head_split
from gab.units.base import UnitModule

CHUNK = 64

FEATURE_MAPS = {
    "elu1": lambda x: jax.nn.elu(x) + 1.0,
    "identity": lambda x: x,
}


def chunked_linear_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxV, chunk: int = CHUNK):
  """Causal, unnormalised linear attention; float32 output of shape [B, L, H, V].

  The length is padded at the end to a multiple of the chunk; padded positions come after every
  real one, so causality keeps them out of the real outputs.
  """
  b, l, h, k = q_BxLxHxK.shape
  v = v_BxLxHxV.shape[-1]
  c = min(chunk, l)
  n = math.ceil(l / c)
  pad = [(0, 0), (0, n * c - l), (0, 0), (0, 0)]
  q_BxNxCxHxK = jnp.pad(q_BxLxHxK, pad).reshape(b, n, c, h, k)
  k_BxNxCxHxK = jnp.pad(k_BxLxHxK, pad).reshape(b, n, c, h, k)
  v_BxNxCxHxV = jnp.pad(v_BxLxHxV, pad).reshape(b, n, c, h, v)

  scores_BxNxHxCxC = jnp.einsum("bnchk,bnshk->bnhcs", q_BxNxCxHxK, k_BxNxCxHxK,
                                preferred_element_type=jnp.float32)
  causal_CxC = jnp.arange(c)[:, None] >= jnp.arange(c)[None, :]
  scores_BxNxHxCxC = jnp.where(causal_CxC[None, None, None], scores_BxNxHxCxC, 0.0)
  intra_BxNxCxHxV = jnp.einsum("bnhcs,bnshv->bnchv", scores_BxNxHxCxC.astype(v_BxNxCxHxV.dtype),
                               v_BxNxCxHxV, preferred_element_type=jnp.float32)

  kv_BxNxHxKxV = jnp.einsum("bnchk,bnchv->bnhkv", k_BxNxCxHxK, v_BxNxCxHxV,
                            preferred_element_type=jnp.float32)
  state_BxNxHxKxV = jnp.cumsum(kv_BxNxHxKxV, axis=1)
  state_BxNxHxKxV = jnp.pad(state_BxNxHxKxV[:, :-1], [(0, 0), (1, 0), (0, 0), (0, 0), (0, 0)])
  inter_BxNxCxHxV = jnp.einsum("bnchk,bnhkv->bnchv", q_BxNxCxHxK.astype(jnp.float32), state_BxNxHxKxV)
  return (intra_BxNxCxHxV + inter_BxNxCxHxV).reshape(b, n * c, h, v)[:, :l]


def linear_attention_recurrence(q_BxLxHxK, k_BxLxHxK, v_BxLxHxV):
  """The definition, one position at a time: S_t = S_{t-1} + k_t^T v_t, o_t = q_t S_t (float32)."""
  b, _, h, k = q_BxLxHxK.shape
  v = v_BxLxHxV.shape[-1]

  def step(state_BxHxKxV, qkv_t):
    q_BxHxK, k_BxHxK, v_BxHxV = qkv_t
    state_BxHxKxV = state_BxHxKxV + k_BxHxK[..., :, None] * v_BxHxV[..., None, :]
    return state_BxHxKxV, jnp.einsum("bhk,bhkv->bhv", q_BxHxK, state_BxHxKxV)

  time_major = [jnp.moveaxis(a.astype(jnp.float32), 1, 0) for a in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxV)]
  _, o_LxBxHxV = jax.lax.scan(step, jnp.zeros((b, h, k, v), jnp.float32), time_major)
  return jnp.moveaxis(o_LxBxHxV, 0, 1)


class LinearAttention(UnitModule):
  """Multi-head linear attention (feature map elu+1 or identity), computed chunk-wise.

  Each head's output is RMS-normalised (float32, learned scale) instead of divided by
  phi(q_t) . sum_s phi(k_s): that denominator destabilises training, and for the identity map it
  can be zero or negative, while the norm keeps the growing state's output at unit scale for both.
  """

  @nn.compact
  def __call__(self, x_BxLxD, z):
    b, l, d = x_BxLxD.shape
    h = self.hp("n_heads")
    k = head_split(d, h, self.unit.kind)
    qkv_BxLx3xHxK = self.dense(3 * d, "qkv")(x_BxLxD).reshape(b, l, 3, h, k)
    phi = FEATURE_MAPS[self.hp("feature_map")]
    q_BxLxHxK, k_BxLxHxK = (phi(qkv_BxLx3xHxK[:, :, i].astype(jnp.float32)).astype(self.dtype)
                            for i in (0, 1))
    o_BxLxHxK = chunked_linear_attention(q_BxLxHxK, k_BxLxHxK, qkv_BxLx3xHxK[:, :, 2])
    o_BxLxHxK = o_BxLxHxK * jax.lax.rsqrt(jnp.mean(jnp.square(o_BxLxHxK), -1, keepdims=True) + 1e-6)
    scale_D = self.param("norm_scale", nn.initializers.ones, (d,), jnp.float32)
    y_BxLxD = (o_BxLxHxK.reshape(b, l, d) * scale_D[None, None, :]).astype(self.dtype)
    return self.dense(d, "out", out=True)(y_BxLxD), z


specs.register(KindSpec(
    "LinearAttention", MIXER, LinearAttention,
    params=(Param("n_heads", 4, (2, 4, 8)), Param("feature_map", "elu1", tuple(FEATURE_MAPS))),
    doc=LinearAttention.__doc__))
