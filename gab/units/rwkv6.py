"""RWKV6 (Finch) units: the time-mix (sequence mixer) and the channel-mix (channel mixer).

Genesys-faithful (allenai/genesys core/rwkv6, itself from fla's RWKV6Attention): key width d/2 and
value width d over 4 heads, data-dependent token-shift mixing ("ddlerp", rank 32 for each of
r, w, k, v, g), a data-dependent decay (LoRA of rank 64), a gate through a rank-64 LoRA, a
LayerNorm over all heads jointly (eps 1e-5), every time-mix projection initialised xavier-uniform
with gain 2^-2.5, and mu, lambda and the bonus u starting at zero. The fla/official choices are
hyperparameters: `norm="groupnorm"` (per head), `gate="dense"` (full-rank W_g), `key_ratio=1.0`.
The WKV math lives in `gab.units.rwkv6_core`.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import CHANNEL, MIXER, KindSpec, Param
from gab.tree import DesignError, Unit
from gab.units import layernorm, rwkv6_core  # layernorm registers LayerNorm, the seed's norm
from gab.units.base import UnitModule

F32 = jnp.float32
XAVIER_GAIN = 2 ** -2.5
MIX_RANK = 32      # rank of the token-shift mixing LoRA, per target (r, w, k, v, g)
DECAY_RANK = 64    # rank of the decay LoRA
GATE_RANK = 64     # rank of the gate LoRA (a Genesys choice; fla and the official model use W_g)
NORM_EPS = 1e-5
SUB_CHUNK = 8      # sub-block size of the chunked WKV: a speed and memory knob, not part of the model

_xavier = nn.initializers.variance_scaling(XAVIER_GAIN ** 2, "fan_avg", "uniform")
_xavier_5xRxD = nn.initializers.variance_scaling(XAVIER_GAIN ** 2, "fan_avg", "uniform",
                                                 in_axis=(0, 1), out_axis=2)
_torch_default = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # U(±1/sqrt(fan_in))


def token_shift(x_BxLxD):
  """x_{t-1} at position t, zeros at t = 0: pad the front, drop the last step."""
  return jnp.pad(x_BxLxD, [(0, 0), (1, 0), (0, 0)])[:, :-1]


def standardize(x, eps: float):
  """(x - mean) / sqrt(var + eps) over the last axis, in float32."""
  x32 = x.astype(F32)
  centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
  return centred * jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + eps)


class RWKV6TimeMix(UnitModule):
  """RWKV6 time-mix: a linear recurrence with a data-dependent decay per key channel.

  Each of r, w, k, v, g reads its own data-dependent interpolation between x_t and x_{t-1}; per
  head, o_t = r_t (S_{t-1} + diag(u) k_t^T v_t) and S_t = diag(w_t) S_{t-1} + k_t^T v_t with
  w_t = exp(-exp(w_hat_t)) in (0, 1); y = (Norm(o) * silu(g)) W_o. `reference=True` swaps the
  chunked form for the step-by-step recurrence (tests only).
  """
  reference: bool = False

  def _proj(self, features: int, name: str, *, use_bias: bool = False, dtype=None):
    return nn.Dense(features, use_bias=use_bias, dtype=dtype or self.dtype, param_dtype=F32,
                    kernel_init=_xavier, name=name)

  def _lora(self, x, features: int, rank: int, name: str, dtype=None):
    """b + tanh(x A) B: the low-rank maps of the decay and the gate."""
    hidden = jnp.tanh(self._proj(rank, f"{name}_a")(x))
    return self._proj(features, f"{name}_b", use_bias=True, dtype=dtype)(hidden)

  def _norm(self, o_BxLxHxV):
    """LayerNorm over all heads jointly (Genesys) or over each head (GroupNorm, fla); one affine."""
    b, l, h, dv = o_BxLxHxV.shape
    groups = h if self.hp("norm") == "groupnorm" else 1
    scale_E = self.param("norm_scale", nn.initializers.ones, (h * dv,), F32)
    bias_E = self.param("norm_bias", nn.initializers.zeros, (h * dv,), F32)
    normed_BxLxGxF = standardize(o_BxLxHxV.reshape(b, l, groups, h * dv // groups), NORM_EPS)
    return normed_BxLxGxF.reshape(b, l, h * dv) * scale_E[None, None] + bias_E[None, None]

  @nn.compact
  def __call__(self, x_BxLxD, z):
    b, l, d = x_BxLxD.shape
    h = self.hp("n_heads")
    dk, dv = int(d * self.hp("key_ratio")), d
    if dk % h or dv % h:
      raise DesignError(f"{self.unit.kind}: key width {dk} and value width {dv} must split into "
                        f"{h} heads")
    dtype = x_BxLxD.dtype
    delta_BxLxD = token_shift(x_BxLxD) - x_BxLxD

    # Data-dependent token shift: five interpolations between x_t and x_{t-1}.
    mu_D = self.param("mu_x", nn.initializers.zeros, (d,), F32)
    xi_BxLxD = x_BxLxD + delta_BxLxD * mu_D.astype(dtype)[None, None]
    mix_BxLx5R = jnp.tanh(self._proj(5 * MIX_RANK, "mix_a")(xi_BxLxD))
    mix_b = self.param("mix_b", _xavier_5xRxD, (5, MIX_RANK, d), F32)
    lam_5xD = self.param("mix_bias", nn.initializers.zeros, (5, d), F32)

    def lerp(i):
      m_BxLxD = mix_BxLx5R[..., i * MIX_RANK:(i + 1) * MIX_RANK] @ mix_b[i].astype(dtype)
      return x_BxLxD + delta_BxLxD * (m_BxLxD + lam_5xD[i].astype(dtype)[None, None])

    xr, xw, xk, xv, xg = (lerp(i) for i in range(5))

    r_BxLxHxK = self._proj(dk, "r")(xr).reshape(b, l, h, dk // h)
    k_BxLxHxK = self._proj(dk, "k")(xk).reshape(b, l, h, dk // h)
    v_BxLxHxV = self._proj(dv, "v")(xv).reshape(b, l, h, dv // h)
    w_hat_BxLxE = self._lora(xw, dk, DECAY_RANK, "w", dtype=F32)
    lw_BxLxHxK = -jnp.exp(w_hat_BxLxE.astype(F32)).reshape(b, l, h, dk // h)
    if self.hp("gate") == "lora":
      g_BxLxE = self._lora(xg, dv, GATE_RANK, "g")
    else:
      g_BxLxE = self._proj(dv, "g")(xg)
    u_HxK = self.param("bonus", nn.initializers.zeros, (h, dk // h), F32)

    if self.reference:
      o_BxLxHxV = rwkv6_core.wkv_reference(r_BxLxHxK, k_BxLxHxK, v_BxLxHxV, lw_BxLxHxK, u_HxK)
    else:
      o_BxLxHxV = rwkv6_core.wkv_chunked(r_BxLxHxK, k_BxLxHxK, v_BxLxHxV, lw_BxLxHxK, u_HxK,
                                         self.hp("chunk_size"), SUB_CHUNK)
    o_BxLxE = self._norm(o_BxLxHxV).astype(dtype)
    y_BxLxE = o_BxLxE * jax.nn.silu(g_BxLxE.astype(F32)).astype(dtype)
    return self._proj(d, "out")(y_BxLxE), z


def ffn_width(d_model: int, hidden_ratio: float) -> int:
  """Genesys's channel-mix width: int(d·ratio) rounded up to a multiple of 32 (2688 at d=768)."""
  return 32 * math.ceil(int(d_model * hidden_ratio) / 32)


class RWKV6ChannelMix(UnitModule):
  """RWKV6 channel-mix: y = sigmoid(x^r W_r) * (relu(x^k W_k)^2 W_v).

  A squared-ReLU MLP gated by a receptance; each reads its own static token-shift interpolation
  x^• = x + (x_{t-1} - x) mu_•. Projections keep PyTorch's default init, as in Genesys.
  """

  def _proj(self, features: int, name: str):
    return nn.Dense(features, use_bias=False, dtype=self.dtype, param_dtype=F32,
                    kernel_init=_torch_default, name=name)

  @nn.compact
  def __call__(self, x_BxLxD, z):
    d = x_BxLxD.shape[-1]
    f = ffn_width(d, self.hp("hidden_ratio"))
    dtype = x_BxLxD.dtype
    delta_BxLxD = token_shift(x_BxLxD) - x_BxLxD
    mu_k = self.param("mu_k", nn.initializers.zeros, (d,), F32).astype(dtype)[None, None]
    mu_r = self.param("mu_r", nn.initializers.zeros, (d,), F32).astype(dtype)[None, None]
    key_BxLxF = jnp.square(jax.nn.relu(self._proj(f, "key")(x_BxLxD + delta_BxLxD * mu_k)))
    value_BxLxD = self._proj(d, "value")(key_BxLxF)
    receptance_BxLxD = self._proj(d, "receptance")(x_BxLxD + delta_BxLxD * mu_r)
    return jax.nn.sigmoid(receptance_BxLxD.astype(F32)).astype(dtype) * value_BxLxD, z


specs.register(KindSpec(
    "RWKV6TimeMix", MIXER, RWKV6TimeMix,
    params=(Param("n_heads", 4, (1, 2, 4, 8)),
            Param("key_ratio", 0.5, (0.5, 1.0)),
            Param("chunk_size", 32, (16, 32, 64)),
            Param("norm", "layernorm", ("layernorm", "groupnorm")),
            Param("gate", "lora", ("lora", "dense"))),
    doc=RWKV6TimeMix.__doc__))
specs.register(KindSpec(
    "RWKV6ChannelMix", CHANNEL, RWKV6ChannelMix,
    params=(Param("hidden_ratio", 3.5, (2.0, 3.5, 4.0)),),
    doc=RWKV6ChannelMix.__doc__))


def seed() -> Unit:
  """The RWKV6 seed block: x + TimeMix(LayerNorm(x)), then x + ChannelMix(LayerNorm(x))."""
  u = Unit.make
  return specs.normalize(u("Sequence", [
      u("Residual", [u("Sequence", [u("LayerNorm"), u("RWKV6TimeMix")])]),
      u("Residual", [u("Sequence", [u("LayerNorm"), u("RWKV6ChannelMix")])]),
  ]))
