"""Mamba2: the selective state-space mixer (SSD) and the Genesys Mamba2 seed block.

The layer follows Genesys's `Mamba2Layer` (allenai/genesys, core/mamba2), which is the reference
Mamba2 module (state-spaces/mamba `mamba2.py`) with three changes; each is a hyperparameter here,
defaulting to the Genesys choice:
- `norm`: "layernorm" (Genesys: LayerNorm with bias over the inner width) or "rmsnorm" (the
  reference gated RMSNorm), both applied after the gate: norm(y * silu(z));
- `d_term`: the skip y += D * x (reference) or none (Genesys);
- `bias`: biases on in_proj and out_proj (Genesys) or not (reference).
The seed block is x + Mamba2Layer(RMSNorm(x)) applied twice. The SSD math is in `mamba2_core`.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import MIXER, KindSpec, Param
from gab.tree import Unit
from gab.units.base import UnitModule
from gab.units.mamba2_core import causal_depthwise_conv, ssd_chunked, ssd_reference
from gab.units.norm import rms_norm

F32 = jnp.float32
NORM_EPS = 1e-5


def head_dim(inner: int, wanted: int) -> int:
  """The head width actually used: `wanted` when it divides the inner width, else their gcd.

  With power-of-two choices this keeps every d_model that is a multiple of 32 valid while giving
  exactly the requested head width whenever it fits (e.g. 128 at d_model 768, as in the seed).
  """
  return math.gcd(inner, wanted)


def _uniform(bound: float):
  return lambda key, shape, dtype=F32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _dt_bias_init(dt_min=1e-3, dt_max=1e-1, floor=1e-4):
  """softplus^-1 of dt drawn log-uniformly in [dt_min, dt_max], so softplus(dt_bias) = dt at init."""
  def init(key, shape, dtype=F32):
    u = jax.random.uniform(key, shape, F32)
    dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)
  return init


def _a_log_init(key, shape, dtype=F32):
  """A = -exp(A_log) with exp(A_log) ~ U[1, 16]: per-head decay rates from slow to fast."""
  return jnp.log(jax.random.uniform(key, shape, F32, 1.0, 16.0)).astype(dtype)


class Mamba2Layer(UnitModule):
  """Mamba2 mixer: in_proj -> causal conv + SiLU on (x, B, C) -> SSD -> norm(y * silu(z)) -> out_proj.

  One scalar decay per head, a state of d_state per head channel, B and C shared by all heads
  (one group). Training uses the chunked SSD; `reference=True` runs the step-by-step recurrence
  instead and exists for tests. Widths: I = expand * d_model (inner), E = I + 2 * d_state (the
  convolved x, B, C), F = I + E + H (in_proj), H heads of P = I / H channels.
  """
  reference: bool = False

  @nn.compact
  def __call__(self, x_BxLxD, z):
    bsz, length, d = x_BxLxD.shape
    inner = self.hp("expand") * d
    p = head_dim(inner, self.hp("head_dim"))
    h, n, k = inner // p, self.hp("d_state"), self.hp("conv_size")
    conv_width = inner + 2 * n

    proj_BxLxF = self.dense(inner + conv_width + h, "in_proj", use_bias=self.hp("bias"))(x_BxLxD)
    gate_BxLxI = proj_BxLxF[..., :inner]
    xbc_BxLxE = proj_BxLxF[..., inner:inner + conv_width]
    dt_BxLxH = proj_BxLxF[..., inner + conv_width:]

    conv_w_KxE = self.param("conv_weight", _uniform(k ** -0.5), (k, conv_width), F32)
    conv_b_E = self.param("conv_bias", _uniform(k ** -0.5), (conv_width,), F32)
    xbc_BxLxE = jax.nn.silu(causal_depthwise_conv(xbc_BxLxE, conv_w_KxE, conv_b_E))
    x_BxLxHxP = xbc_BxLxE[..., :inner].reshape(bsz, length, h, p)
    b_BxLx1xN = xbc_BxLxE[..., inner:inner + n].reshape(bsz, length, 1, n)
    c_BxLx1xN = xbc_BxLxE[..., inner + n:].reshape(bsz, length, 1, n)

    dt_bias_H = self.param("dt_bias", _dt_bias_init(), (h,), F32)
    a_H = -jnp.exp(self.param("A_log", _a_log_init, (h,), F32))
    dt_BxLxH = jax.nn.softplus(dt_BxLxH.astype(F32) + dt_bias_H[None, None, :])
    d_H = self.param("D", nn.initializers.ones, (h,), F32) if self.hp("d_term") else None

    if self.reference:
      y_BxLxHxP = ssd_reference(x_BxLxHxP, dt_BxLxH, a_H, b_BxLx1xN, c_BxLx1xN, d_H)
    else:
      y_BxLxHxP = ssd_chunked(x_BxLxHxP, dt_BxLxH, a_H, b_BxLx1xN, c_BxLx1xN, d_H,
                              chunk_size=self.hp("chunk_size"))
    y_BxLxI = y_BxLxHxP.reshape(bsz, length, inner).astype(F32) * jax.nn.silu(gate_BxLxI.astype(F32))
    y_BxLxI = self._norm(y_BxLxI).astype(self.dtype)
    return self.dense(d, "out_proj", out=True, use_bias=self.hp("bias"))(y_BxLxI), z

  def _norm(self, y_BxLxI):
    """LayerNorm (scale and bias) or RMSNorm (scale) over the inner features, in float32."""
    inner = y_BxLxI.shape[-1]
    scale_I = self.param("norm_scale", nn.initializers.ones, (inner,), F32)
    if self.hp("norm") == "rmsnorm":
      return rms_norm(y_BxLxI, scale_I, eps=NORM_EPS)
    bias_I = self.param("norm_bias", nn.initializers.zeros, (inner,), F32)
    centred_BxLxI = y_BxLxI - jnp.mean(y_BxLxI, axis=-1, keepdims=True)
    var_BxLx1 = jnp.mean(jnp.square(centred_BxLxI), axis=-1, keepdims=True)
    return centred_BxLxI * jax.lax.rsqrt(var_BxLx1 + NORM_EPS) * scale_I[None, None, :] + bias_I[None, None, :]


specs.register(KindSpec(
    "Mamba2Layer", MIXER, Mamba2Layer,
    params=(Param("expand", 2, (1, 2)),
            Param("head_dim", 128, (32, 64, 128)),
            Param("d_state", 64, (16, 32, 64, 128)),
            Param("conv_size", 4, (2, 3, 4)),
            Param("chunk_size", 64, (16, 32, 64, 128, 256)),
            Param("norm", "layernorm", ("layernorm", "rmsnorm")),
            Param("d_term", False, (False, True)),
            Param("bias", True, (True, False))),
    doc=Mamba2Layer.__doc__))


def seed() -> Unit:
  """The Genesys Mamba2 block: two pre-norm residual Mamba2 layers, x += Mamba2Layer(RMSNorm(x))."""
  def layer() -> Unit:
    return Unit.make("Residual", [Unit.make("Sequence", [Unit.make("RMSNorm"), Unit.make("Mamba2Layer")])])
  return specs.normalize(Unit.make("Sequence", [layer(), layer()]))
