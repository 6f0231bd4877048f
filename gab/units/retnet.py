"""RetNet units: multi-scale retention (sequence mixer) and the RetNet MLP (channel mixer).

Genesys-faithful (allenai/genesys core/retnet, itself from fla): q, k of width d and v, g of width
`value_factor`·d, no biases, interleaved rotary on q and k, fixed decays γ_h = 1 − 2^(−5−h), a
per-head RMSNorm (eps 1e-5, one weight shared by the heads), a swish output gate, and every
projection initialised xavier-uniform with gain 2^−2.5. The math lives in `gab.units.retnet_core`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import specs
from gab.specs import CHANNEL, MIXER, KindSpec, Param
from gab.tree import DesignError, Unit
from gab.units import retnet_core
from gab.units.base import UnitModule
from gab.units.norm import rms_norm

HEAD_NORM_EPS = 1e-5
XAVIER_GAIN = 2 ** -2.5


class MultiScaleRetention(UnitModule):
  """Multi-scale retention: y = (RMSNorm_head(retention(q, k, v)) ⊙ swish(g)) W_o.

  Each head keeps a decayed sum S_t = γ_h S_{t−1} + k_tᵀ v_t and reads it with q_t/√K; the heads
  decay at different rates (the "multi-scale"), from 2^−5 forgetting per step down to 2^−(4+H).
  `reference=True` swaps the chunked form for the step-by-step recurrence (tests only).
  """
  reference: bool = False

  def _proj(self, features: int, name: str):
    init = nn.initializers.variance_scaling(XAVIER_GAIN ** 2, "fan_avg", "uniform")
    return nn.Dense(features, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=init, name=name)

  @nn.compact
  def __call__(self, x_BxLxD, z):
    b, l, d = x_BxLxD.shape
    h, factor = self.hp("n_heads"), self.hp("value_factor")
    if d % h or (d // h) % 2:
      raise DesignError(f"{self.unit.kind}: d_model {d} must split into {h} heads of even size")
    dk, dv = d // h, factor * d // h
    q_BxLxHxK = self._proj(d, "q")(x_BxLxD).reshape(b, l, h, dk)
    k_BxLxHxK = self._proj(d, "k")(x_BxLxD).reshape(b, l, h, dk)
    v_BxLxHxV = self._proj(h * dv, "v")(x_BxLxD).reshape(b, l, h, dv)
    g_BxLxE = self._proj(h * dv, "g")(x_BxLxD)
    if self.hp("rope"):
      q_BxLxHxK = retnet_core.rotary_interleaved(q_BxLxHxK, z["positions"])
      k_BxLxHxK = retnet_core.rotary_interleaved(k_BxLxHxK, z["positions"])
    q_BxLxHxK = q_BxLxHxK * jnp.asarray(dk ** -0.5, q_BxLxHxK.dtype)
    log_decay_H = retnet_core.head_log_decays(h)
    if self.reference:
      o_BxLxHxV = retnet_core.retention_recurrent(q_BxLxHxK, k_BxLxHxK, v_BxLxHxV, log_decay_H)
    else:
      o_BxLxHxV = retnet_core.retention_chunked(q_BxLxHxK, k_BxLxHxK, v_BxLxHxV, log_decay_H,
                                                self.hp("chunk_size"))
    scale_V = self.param("head_norm", nn.initializers.ones, (dv,), jnp.float32)
    o_BxLxHxV = rms_norm(o_BxLxHxV, scale_V, HEAD_NORM_EPS).astype(self.dtype)
    gate_BxLxE = jax.nn.silu(g_BxLxE.astype(jnp.float32)).astype(self.dtype)
    y_BxLxE = o_BxLxHxV.reshape(b, l, h * dv) * gate_BxLxE
    return self._proj(d, "out")(y_BxLxE), z


def mlp_width(d_model: int, hidden_ratio: int, multiple_of: int) -> int:
  """Genesys's RetNetMLP width: ⌊d·ratio·2/3⌋ rounded up to a multiple (1024 at d=768, ratio 2)."""
  m = int(d_model * hidden_ratio * 2 / 3)
  return multiple_of * -(-m // multiple_of)


class RetNetMLP(UnitModule):
  """RetNet's gated MLP: [g | u] = x W (gate first), y = (swish(g) ⊙ u) W_down.

  The same function as GatedMLP(activation=silu); it is its own kind for the Genesys width rule.
  """

  @nn.compact
  def __call__(self, x_BxLxD, z):
    d = x_BxLxD.shape[-1]
    m = mlp_width(d, self.hp("hidden_ratio"), self.hp("multiple_of"))
    gu_BxLx2M = self.dense(2 * m, "gate_up")(x_BxLxD)
    g_BxLxM, u_BxLxM = gu_BxLx2M[..., :m], gu_BxLx2M[..., m:]
    y_BxLxM = jax.nn.silu(g_BxLxM.astype(jnp.float32)).astype(u_BxLxM.dtype) * u_BxLxM
    return self.dense(d, "down", out=True)(y_BxLxM), z


specs.register(KindSpec(
    "MultiScaleRetention", MIXER, MultiScaleRetention,
    params=(Param("n_heads", 8, (1, 2, 4, 8)),
            Param("value_factor", 2, (1, 2)),
            Param("chunk_size", 64, (16, 32, 64, 128)),
            Param("rope", True, (True, False))),
    reads=("positions",), doc=MultiScaleRetention.__doc__))
specs.register(KindSpec(
    "RetNetMLP", CHANNEL, RetNetMLP,
    params=(Param("hidden_ratio", 2, (2, 3, 4)), Param("multiple_of", 256, (8, 256))),
    doc=RetNetMLP.__doc__))


def seed() -> Unit:
  """The RetNet seed block: x + MSR(RMSNorm(x)), then x + RetNetMLP(RMSNorm(x))."""
  u = Unit.make
  return specs.normalize(u("Sequence", [
      u("Residual", [u("Sequence", [u("RMSNorm"), u("MultiScaleRetention")])]),
      u("Residual", [u("Sequence", [u("RMSNorm"), u("RetNetMLP")])]),
  ]))
