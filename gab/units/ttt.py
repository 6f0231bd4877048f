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

from gab import registry
from gab.registry import MIXER, KindSpec, Param
from gab.tree import Unit
from gab.units import ttt_core
from gab.units.attention import head_split
from gab.units.base import UnitModule, dense_init

QK_CONV_WIDTH = 4


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
      qk_BxLxD = self.dense(d, "qk")(x_BxLxD)
      q_BxLxD, k_BxLxD = self._conv(d, "conv_q")(qk_BxLxD), self._conv(d, "conv_k")(qk_BxLxD)
    else:
      q_BxLxD, k_BxLxD = self.dense(d, "q")(x_BxLxD), self.dense(d, "k")(x_BxLxD)
    v_BxLxD = self.dense(d, "v")(x_BxLxD)
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

  def _conv(self, d: int, name: str):
    """Causal depthwise convolution over time (left padding only)."""
    return nn.Conv(d, kernel_size=(QK_CONV_WIDTH,), feature_group_count=d,
                   padding=[(QK_CONV_WIDTH - 1, 0)], use_bias=True, dtype=self.dtype,
                   param_dtype=jnp.float32, name=name)


registry.register(KindSpec(
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

  return registry.normalize(U("Sequence", [
      pre_norm(U("CausalConv", kernel_size=4)),
      pre_norm(U("TTTLinear", n_heads=4, mini_batch=16, base_lr=1.0)),
      pre_norm(U("GatedMLP", activation="silu", expansion=2.667)),
  ]))
