"""TTT-Linear: a sequence mixer whose hidden state is a linear model trained while it reads.

The unit wraps the math in `gab.units.ttt_core` with the projections of Genesys's `TTTLinear`
(allenai/genesys, a port of test-time-training/ttt-lm-jax `TTTLinearBase`): q, k, v (d -> d, no
bias), rotary on q and k with positions taken modulo the mini-batch, a learned inner learning rate
per token and head, a LayerNorm over the concatenated heads, then the output projection.
`seed()` is the Genesys TTT block (the Mamba-backbone form of the paper) as a unit tree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import MIXER, KindSpec, Param
from gab.tree import Unit
from gab.units import ttt_core
from gab.units.attention import head_split
from gab.units.base import UnitModule, dense_init

QK_CONV_WIDTH = 4


def _conv_init(key, shape, dtype=jnp.float32):
  """U(+-1/sqrt(width)): the fan-in of one depthwise filter, as PyTorch's Conv1d default."""
  bound = shape[0] ** -0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class TTTLinear(UnitModule):
  """TTT-Linear: per head, z + LN(z W + b) trained by one gradient step per mini-batch token.

  Options off in the Genesys seed, on in the paper's 125m-TTT layer: `qk_conv` (one shared q/k
  projection followed by separate causal depthwise convolutions of width 4 for q and k) and
  `output_gate` (gelu(x W_g) times the normalised output). `rope=False` drops the rotary.
  """

  @nn.compact
  def __call__(self, x_BxLxD, z):
    b, l, d = x_BxLxD.shape
    h = self.hp("n_heads")
    f = head_split(d, h, self.unit.kind)
    mb = self.hp("mini_batch")

    if self.hp("qk_conv"):
      qkv_BxLxD2 = self.dense(2 * d, "qk_v")(x_BxLxD)
      qk_BxLxD, v_BxLxD = qkv_BxLxD2[..., :d], qkv_BxLxD2[..., d:]
      q_BxLxD, k_BxLxD = self._conv(qk_BxLxD, "conv_q"), self._conv(qk_BxLxD, "conv_k")
    else:
      qkv_BxLxD3 = self.dense(3 * d, "qkv")(x_BxLxD)
      q_BxLxD, k_BxLxD, v_BxLxD = qkv_BxLxD3[..., :d], qkv_BxLxD3[..., d:2 * d], qkv_BxLxD3[..., 2 * d:]
    q_BxLxHxF, k_BxLxHxF, v_BxLxHxF = (a.reshape(b, l, h, f) for a in (q_BxLxD, k_BxLxD, v_BxLxD))
    if self.hp("rope"):
      positions_BxL = z["positions"] % mb
      q_BxLxHxF = ttt_core.rotary_interleaved(q_BxLxHxF, positions_BxL)
      k_BxLxHxF = ttt_core.rotary_interleaved(k_BxLxHxF, positions_BxL)

    theta_HxD = self.param("lr_weight", dense_init(), (h, d), jnp.float32)
    beta_H = self.param("lr_bias", nn.initializers.zeros, (h,), jnp.float32)
    lr_BxLxH = ttt_core.inner_lr(x_BxLxD, theta_HxD, beta_H, self.hp("base_lr"))
    tau_M = ttt_core.token_scale(self.param("token_idx", nn.initializers.zeros, (mb,), jnp.float32))
    w_HxFxF = self.param("w", dense_init(), (h, f, f), jnp.float32)
    b_HxF = self.param("b", nn.initializers.zeros, (h, f), jnp.float32)
    ln_scale_HxF = self.param("ttt_norm_scale", nn.initializers.ones, (h, f), jnp.float32)
    ln_bias_HxF = self.param("ttt_norm_bias", nn.initializers.zeros, (h, f), jnp.float32)

    z_BxLxHxF = ttt_core.ttt_linear_chunked(q_BxLxHxF, k_BxLxHxF, v_BxLxHxF, lr_BxLxH, tau_M, w_HxFxF,
                                            b_HxF, ln_scale_HxF, ln_bias_HxF, mb)
    y_BxLxD = nn.LayerNorm(epsilon=ttt_core.LN_EPS, dtype=jnp.float32, param_dtype=jnp.float32,
                           name="post_norm")(z_BxLxHxF.reshape(b, l, d))
    if self.hp("output_gate"):
      gate_BxLxD = self.dense(d, "gate")(x_BxLxD).astype(jnp.float32)
      y_BxLxD = jax.nn.gelu(gate_BxLxD) * y_BxLxD
    return self.dense(d, "out", out=True)(y_BxLxD.astype(self.dtype)), z

  def _conv(self, x_BxLxD, name: str):
    """Causal depthwise convolution of width 4 as a sum of shifted copies (fast on every backend)."""
    l, d = x_BxLxD.shape[1:]
    kernel_KxD = self.param(f"{name}_kernel", _conv_init, (QK_CONV_WIDTH, d), jnp.float32)
    kernel_KxD = kernel_KxD.astype(self.dtype)
    bias_D = self.param(f"{name}_bias", nn.initializers.zeros, (d,), jnp.float32).astype(self.dtype)
    padded = jnp.pad(x_BxLxD, ((0, 0), (QK_CONV_WIDTH - 1, 0), (0, 0)))
    y_BxLxD = bias_D[None, None, :]
    for i in range(QK_CONV_WIDTH):
      y_BxLxD = y_BxLxD + padded[:, i:i + l] * kernel_KxD[i][None, None, :]
    return y_BxLxD


specs.register(KindSpec(
    "TTTLinear", MIXER, TTTLinear,
    params=(Param("n_heads", 4, (1, 2, 4, 8)),
            Param("mini_batch", 16, (8, 16, 32, 64)),
            Param("base_lr", 1.0, (0.1, 0.3, 1.0, 3.0)),
            Param("rope", True, (True, False)),
            Param("qk_conv", False, (False, True)),
            Param("output_gate", False, (False, True))),
    reads=("positions",), doc=TTTLinear.__doc__))


def seed() -> Unit:
  """Genesys TTT block: x += Conv(RMSNorm x); x += TTTLinear(RMSNorm x); x += SwiGLU(RMSNorm x)."""
  U = Unit.make

  def pre_norm(unit: Unit) -> Unit:
    return U("Residual", [U("Sequence", [U("RMSNorm"), unit])])

  return specs.normalize(U("Sequence", [
      pre_norm(U("CausalConv", kernel_size=4)),
      pre_norm(U("TTTLinear", n_heads=4, mini_batch=16, base_lr=1.0)),
      pre_norm(U("GatedMLP", activation="silu", expansion=2.667)),
  ]))
