"""Retention (RetNet, arXiv 2307.08621) as pure functions: no parameters, no Flax.

Per head h, with a fixed scalar decay γ_h and a state S ∈ R^{K×V} (S₋₁ = 0):

  S_t = γ_h S_{t−1} + k_tᵀ v_t
  o_t = q_t S_t                      (inclusive: token t sees itself; q is already scaled)

`retention_chunked` is the training form: matmuls within chunks of Q tokens and one small
lower-triangular [nc×nc] matmul that carries the chunk states forward, so nothing scans over time.
`retention_recurrent` is the step-by-step definition, kept for tests only.

Decays are handled in log space and float32: every power γ^n is `exp(n·log γ)` with n ≥ 0, and the
masked entries of a decay matrix get their exponent set to −inf before the `exp`.
"""

import jax
import jax.numpy as jnp


def head_log_decays(n_heads: int) -> jax.Array:
  """log γ_h with γ_h = 1 − 2^(−5−h): the multi-scale decays, from 0.96875 up to 1 − 2^(−4−H)."""
  h = jnp.arange(n_heads, dtype=jnp.float32)
  return jnp.log1p(-jnp.exp2(-5.0 - h))


def rotary_interleaved(x_BxLxHxK, positions_BxL, base: float = 10000.0):
  """Rotary embedding on interleaved pairs (2i, 2i+1), angle p·base^(−2i/K), in float32.

  This is torchtune's `RotaryPositionalEmbeddings`, which the Genesys retention uses; the library's
  `attention.rotary` pairs the two halves instead.
  """
  b, l, h, k = x_BxLxHxK.shape
  freqs_K2 = base ** (-jnp.arange(0, k, 2, dtype=jnp.float32) / k)
  angles_BxLxK2 = positions_BxL.astype(jnp.float32)[:, :, None] * freqs_K2[None, None, :]
  cos_BxLx1xK2 = jnp.cos(angles_BxLxK2)[:, :, None, :]
  sin_BxLx1xK2 = jnp.sin(angles_BxLxK2)[:, :, None, :]
  pairs = x_BxLxHxK.astype(jnp.float32).reshape(b, l, h, k // 2, 2)
  even, odd = pairs[..., 0], pairs[..., 1]
  out = jnp.stack([even * cos_BxLx1xK2 - odd * sin_BxLx1xK2,
                   odd * cos_BxLx1xK2 + even * sin_BxLx1xK2], axis=-1)
  return out.reshape(b, l, h, k).astype(x_BxLxHxK.dtype)


def _lower_decay(log_decay_H, n: int, step: int, strict: bool):
  """[H, n, n] with entry γ^{step·(i−j−strict)} on or below the diagonal (below only if strict), else 0."""
  i = jnp.arange(n, dtype=jnp.float32)
  lag_NxN = i[:, None] - i[None, :] - float(strict)
  keep_NxN = lag_NxN >= 0
  arg_HxNxN = step * lag_NxN[None, :, :] * log_decay_H[:, None, None]
  return jnp.exp(jnp.where(keep_NxN[None, :, :], arg_HxNxN, -jnp.inf))


def retention_chunked(q_BxTxHxK, k_BxTxHxK, v_BxTxHxV, log_decay_H, chunk_size: int):
  """Retention outputs o [B, T, H, V] in float32, computed chunk by chunk.

  For chunk c (local positions i, j < Q) with incoming state S_c:
    O_c     = ((q kᵀ) ⊙ D) v + diag(γ^{i+1}) q S_c,          D[i, j] = γ^{i−j} for i ≥ j, else 0
    S_{c+1} = γ^Q S_c + Σ_j γ^{Q−1−j} k_jᵀ v_j
  Unrolled, S_c = Σ_{c' < c} γ^{Q(c−1−c')} st_{c'}: one matmul with a strictly lower-triangular
  [nc×nc] matrix. A ragged T is padded at the end with k = v = 0 (which leaves every real output
  unchanged) and the padding sliced off.
  """
  b, t, h, dk = q_BxTxHxK.shape
  dv = v_BxTxHxV.shape[-1]
  q_len = min(chunk_size, t)
  nc = -(-t // q_len)
  pad = nc * q_len - t

  def chunks(x_BxTxHxF):
    x_BxTxHxF = jnp.pad(x_BxTxHxF, ((0, 0), (0, pad), (0, 0), (0, 0)))
    return x_BxTxHxF.reshape(b, nc, q_len, h, -1).transpose(0, 3, 1, 2, 4)

  q_BxHxCxQxK, k_BxHxCxQxK, v_BxHxCxQxV = chunks(q_BxTxHxK), chunks(k_BxTxHxK), chunks(v_BxTxHxV)
  dtype = q_BxHxCxQxK.dtype
  log_decay_H = log_decay_H.astype(jnp.float32)
  pos_Q = jnp.arange(q_len, dtype=jnp.float32)
  einsum = lambda spec, a, c: jnp.einsum(spec, a, c, preferred_element_type=jnp.float32)  # noqa: E731

  decay_HxQxQ = _lower_decay(log_decay_H, q_len, 1, strict=False)
  scores_BxHxCxQxQ = einsum("bhcik,bhcjk->bhcij", q_BxHxCxQxK, k_BxHxCxQxK) * decay_HxQxQ[None, :, None]
  o_BxHxCxQxV = einsum("bhcij,bhcjv->bhciv", scores_BxHxCxQxQ.astype(dtype), v_BxHxCxQxV)

  if nc > 1:
    k_decay_HxQ = jnp.exp((q_len - 1 - pos_Q)[None, :] * log_decay_H[:, None])
    k_BxHxCxQxK = (k_BxHxCxQxK * k_decay_HxQ[None, :, None, :, None]).astype(dtype)
    st_BxHxCxKxV = einsum("bhcjk,bhcjv->bhckv", k_BxHxCxQxK, v_BxHxCxQxV)
    carry_HxCxC = _lower_decay(log_decay_H, nc, q_len, strict=True)
    s_in_BxHxCxKxV = jnp.einsum("hcd,bhdkv->bhckv", carry_HxCxC, st_BxHxCxKxV)
    q_decay_HxQ = jnp.exp((pos_Q + 1)[None, :] * log_decay_H[:, None])
    q_BxHxCxQxK = (q_BxHxCxQxK * q_decay_HxQ[None, :, None, :, None]).astype(dtype)
    o_BxHxCxQxV += einsum("bhcik,bhckv->bhciv", q_BxHxCxQxK, s_in_BxHxCxKxV.astype(dtype))

  o_BxTxHxV = o_BxHxCxQxV.transpose(0, 2, 3, 1, 4).reshape(b, nc * q_len, h, dv)
  return o_BxTxHxV[:, :t]


def retention_recurrent(q_BxTxHxK, k_BxTxHxK, v_BxTxHxV, log_decay_H):
  """The step-by-step definition (a scan over time, float32): the reference for tests."""
  b, _, h, dk = q_BxTxHxK.shape
  dv = v_BxTxHxV.shape[-1]
  gamma_Hx1x1 = jnp.exp(log_decay_H.astype(jnp.float32))[:, None, None]

  def step(s_BxHxKxV, qkv_t):
    q_BxHxK, k_BxHxK, v_BxHxV = qkv_t
    s_BxHxKxV = gamma_Hx1x1[None] * s_BxHxKxV + k_BxHxK[..., :, None] * v_BxHxV[..., None, :]
    return s_BxHxKxV, jnp.einsum("bhk,bhkv->bhv", q_BxHxK, s_BxHxKxV)

  time_major = [jnp.moveaxis(a.astype(jnp.float32), 1, 0) for a in (q_BxTxHxK, k_BxTxHxK, v_BxTxHxV)]
  s0_BxHxKxV = jnp.zeros((b, h, dk, dv), jnp.float32)
  _, o_TxBxHxV = jax.lax.scan(step, s0_BxHxKxV, tuple(time_major))
  return jnp.moveaxis(o_TxBxHxV, 0, 1)
