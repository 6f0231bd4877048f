"""A hand-written GPT in plain Flax: the yardstick `train.bench` times the GPT seed against.

No unit tree and no registry: token embedding -> n_blocks x [x + attn(rmsnorm(x)),
x + swiglu(rmsnorm(x))] -> final RMSNorm -> head tied to the embedding. The math, parameter count
and init scheme are exactly those of the GPT seed compiled from its tree (`gab.seeds.gpt`): fused
qkv and gate/up projections, rotary (rotate-half) attention through `gab.units.attention_impl` (the
seed's kernel selection), normal(0.02) init with residual-stream output projections scaled by
(2 * n_blocks) ** -0.5, float32 parameters and norms with matmuls in the compute dtype, float32
logits; the trainer's loss (`gab.train_step.mean_nll`) treats it as it treats the tree's `LM`.
Any throughput gap between the two is then the cost of building a model from a tree, not of a
different model.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab.units import attention_impl


def mlp_hidden(d_model: int, expansion: float, multiple: int = 8) -> int:
  return multiple * math.ceil(expansion * d_model / multiple)


def rmsnorm(x_BxLxD, scale_D, eps: float = 1e-6):
  x32 = x_BxLxD.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  return (x32 * scale_D[None, None, :]).astype(x_BxLxD.dtype)


def rope(x_BxLxHxK, positions_BxL, base: float = 10000.0):
  half = x_BxLxHxK.shape[-1] // 2
  freqs_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BxLxK2 = positions_BxL[..., None].astype(jnp.float32) * freqs_K2[None, None, :]
  sin, cos = jnp.sin(angles_BxLxK2)[:, :, None, :], jnp.cos(angles_BxLxK2)[:, :, None, :]
  x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxLxHxK.dtype)


class Block(nn.Module):
  """One pre-norm transformer block: rotary causal attention, then a SwiGLU MLP."""
  n_heads: int
  hidden: int
  n_blocks: int
  dtype: Any = jnp.float32

  def dense(self, features: int, name: str, out: bool = False):
    std = 0.02 * ((2 * self.n_blocks) ** -0.5 if out else 1.0)
    return nn.Dense(features, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(stddev=std), name=name)

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL):
    b, l, d = x_BxLxD.shape
    h, k = self.n_heads, d // self.n_heads
    ones = nn.initializers.ones
    a_BxLxD = rmsnorm(x_BxLxD, self.param("attn_norm", ones, (d,), jnp.float32))
    qkv_BxLx3xHxK = self.dense(3 * d, "qkv")(a_BxLxD).reshape(b, l, 3, h, k)
    q_BxLxHxK = rope(qkv_BxLx3xHxK[:, :, 0], positions_BxL)
    k_BxLxHxK = rope(qkv_BxLx3xHxK[:, :, 1], positions_BxL)
    o_BxLxHxK = attention_impl.dot_product_attention(q_BxLxHxK, k_BxLxHxK, qkv_BxLx3xHxK[:, :, 2])
    x_BxLxD = x_BxLxD + self.dense(d, "out", out=True)(o_BxLxHxK.reshape(b, l, d))

    m_BxLxD = rmsnorm(x_BxLxD, self.param("mlp_norm", ones, (d,), jnp.float32))
    gate_up_BxLxF2 = self.dense(2 * self.hidden, "gate_up")(m_BxLxD)
    gate_BxLxF, up_BxLxF = gate_up_BxLxF2[..., :self.hidden], gate_up_BxLxF2[..., self.hidden:]
    return x_BxLxD + self.dense(d, "down", out=True)(jax.nn.silu(gate_BxLxF) * up_BxLxF)


class ReferenceGPT(nn.Module):
  """`apply(params, tokens_BxL) -> float32 logits [B, L, vocab]`, with `features` and `head_matrix`
  as `gab.model.LM` has them (so the trainer's loss applies the head the same way to both)."""
  vocab_size: int
  d_model: int
  n_blocks: int
  n_heads: int = 4
  expansion: float = 2.667
  dtype: Any = jnp.float32

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(stddev=0.02),
                          param_dtype=jnp.float32, dtype=self.dtype)
    hidden = mlp_hidden(self.d_model, self.expansion)
    self.blocks = [Block(self.n_heads, hidden, self.n_blocks, self.dtype) for _ in range(self.n_blocks)]
    self.final_norm = self.param("final_norm", nn.initializers.ones, (self.d_model,), jnp.float32)

  def __call__(self, tokens_BxL):
    x_BxLxD, _ = self.features(tokens_BxL)
    return jnp.einsum("bld,vd->blv", x_BxLxD, self.head_matrix().astype(self.dtype),
                      preferred_element_type=jnp.float32)

  def features(self, tokens_BxL):
    """The final normed hidden state [B, L, d_model] (compute dtype) and an empty Z."""
    b, l = tokens_BxL.shape
    positions_BxL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32)[None, :], (b, l))
    x_BxLxD = self.embed(tokens_BxL).astype(self.dtype)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, positions_BxL)
    return rmsnorm(x_BxLxD, self.final_norm), {}

  def head_matrix(self):
    return self.embed.embedding
