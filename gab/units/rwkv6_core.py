"""The WKV recurrence of RWKV6 (Finch) as pure functions: a chunked training form and a reference.

Per head, with state S of shape [K, V], S_{-1} = 0, log-decays lw_t = log w_t <= 0 (one per key
channel) and the bonus u [K] for the current token (no 1/sqrt(K) scale):

  o_t = r_t (S_{t-1} + diag(u) k_t^T v_t)
  S_t = diag(exp(lw_t)) S_{t-1} + k_t^T v_t

so token s < t reaches o_t with weight prod_{s<j<t} w_j (the official CUDA kernel's order: read the
state, then update it). `wkv_chunked` is the training form: matmuls inside chunks of Q steps and one
small matmul across chunks, no scan over time. `wkv_reference` runs the recurrence step by step and
exists only to test the chunked form against.

Because the decay is a vector over key channels, the intra-chunk scores cannot be factorised as
(r e^{G}) (k e^{-G})^T without overflowing e^{-G}. As in fla's `chunk_rwkv6` (GLA's secondary
chunking), each chunk is split into sub-blocks of s steps: scores between different sub-blocks are
matmuls after rescaling both sides to the cumulative decay at the start of the row's sub-block
(both exponents <= 0), and scores inside a sub-block are summed element by element over channels.

Shapes: r, k, lw [B, T, H, K]; v [B, T, H, V]; u [H, K]. Log-decays, cumulative sums and every exp
run in float32; matmuls take r's dtype and accumulate in float32.
"""

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _mm(spec, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=F32)


def _shift(x, axis: int, reverse: bool = False):
  """x moved one step along `axis` (forwards, or backwards if `reverse`), a zero filling the gap."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, 1) if reverse else (1, 0)
  x = jnp.pad(x, pad)
  return jax.lax.slice_in_dim(x, 1, None, axis=axis) if reverse else \
      jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)


def _sum_before(x, axis: int):
  """Exclusive cumulative sum: out_i = x_0 + ... + x_{i-1} (no subtraction, so exact at 0)."""
  return jnp.cumsum(_shift(x, axis), axis=axis)


def _sum_after(x, axis: int):
  """Reverse exclusive cumulative sum: out_i = x_{i+1} + ... + x_{n-1}."""
  return jax.lax.cumsum(_shift(x, axis, reverse=True), axis=axis, reverse=True)


def between(a_xNxK):
  """E[..., i, j, :] = a[j+1] + ... + a[i-1] for j < i and -inf for j >= i (time is axis -2).

  The log-decay from token j to token i, exclusive at both ends. Summing a masked copy of `a` down
  the rows avoids subtracting two large cumulative sums.
  """
  n = a_xNxK.shape[-2]
  rows_NxNx1 = jnp.arange(n)[:, None, None]
  cols_NxNx1 = jnp.arange(n)[None, :, None]
  a_xNxNxK = jnp.broadcast_to(a_xNxK[..., :, None, :], a_xNxK.shape[:-1] + (n, a_xNxK.shape[-1]))
  upto_xNxNxK = jnp.cumsum(jnp.where(rows_NxNx1 > cols_NxNx1, a_xNxNxK, 0.0), axis=-3)
  return jnp.where(rows_NxNx1 > cols_NxNx1, _shift(upto_xNxNxK, axis=-3), -jnp.inf)


def wkv_chunked(r_BxTxHxK, k_BxTxHxK, v_BxTxHxV, lw_BxTxHxK, u_HxK, chunk_size: int = 32,
                sub_chunk: int = 16):
  """The chunked WKV; T need not be a multiple of `chunk_size` (the end is padded with r=k=v=lw=0).

  Returns o [B, T, H, V] in float32. Chunks (C) of Q steps split into S sub-blocks of U steps.
  """
  b, t, h, dk = r_BxTxHxK.shape
  dv = v_BxTxHxV.shape[-1]
  q = chunk_size
  u = min(sub_chunk, q)
  if q % u:
    raise ValueError(f"chunk_size {q} must be a multiple of sub_chunk {u}")
  nc, ns = -(-t // q), q // u
  pad = nc * q - t
  cdt = r_BxTxHxK.dtype

  def blocks(x, dtype):
    x = jnp.pad(x.astype(dtype), [(0, 0), (0, pad), (0, 0), (0, 0)])
    return x.reshape(b, nc, ns, u, h, x.shape[-1]).transpose(0, 4, 1, 2, 3, 5)

  r_BxHxCxSxUxK = blocks(r_BxTxHxK, F32)
  k_BxHxCxSxUxK = blocks(k_BxTxHxK, F32)
  v_BxHxCxSxUxV = blocks(v_BxTxHxV, cdt)
  lw_BxHxCxSxUxK = blocks(lw_BxTxHxK, F32)
  sub_BxHxCxSxK = jnp.sum(lw_BxHxCxSxUxK, axis=4)
  # r decayed from its sub-block's start, k decayed to its sub-block's end: exponents <= 0.
  rs_BxHxCxSxUxK = r_BxHxCxSxUxK * jnp.exp(_sum_before(lw_BxHxCxSxUxK, axis=4))
  ks_BxHxCxSxUxK = k_BxHxCxSxUxK * jnp.exp(_sum_after(lw_BxHxCxSxUxK, axis=4))

  # 1. Scores between sub-blocks J < I of a chunk: matmuls, decayed across the sub-blocks between.
  gap_BxHxCxSxSx1xK = jnp.exp(between(sub_BxHxCxSxK))[:, :, :, :, :, None]
  kgap_BxHxCxSxQxK = (ks_BxHxCxSxUxK[:, :, :, None] * gap_BxHxCxSxSx1xK).reshape(b, h, nc, ns, q, dk)
  a_BxHxCxSxUxQ = _mm("bhcsik,bhcsjk->bhcsij", rs_BxHxCxSxUxK.astype(cdt), kgap_BxHxCxSxQxK.astype(cdt))

  # 2. Scores inside a sub-block: strictly lower, channel by channel; the bonus on the diagonal.
  inside_BxHxCxSxUxUxK = jnp.exp(between(lw_BxHxCxSxUxK))
  a_BxHxCxSxUxU = jnp.sum(r_BxHxCxSxUxK[:, :, :, :, :, None] * k_BxHxCxSxUxK[:, :, :, :, None]
                          * inside_BxHxCxSxUxUxK, axis=-1)
  bonus_BxHxCxSxU = jnp.sum(r_BxHxCxSxUxK * k_BxHxCxSxUxK * u_HxK.astype(F32)[None, :, None, None, None],
                            axis=-1)
  a_BxHxCxSxUxU += bonus_BxHxCxSxU[..., None] * jnp.eye(u, dtype=F32)[None, None, None, None]
  eye_SxS = jnp.eye(ns, dtype=F32)
  a_BxHxCxSxUxQ += (a_BxHxCxSxUxU[:, :, :, :, :, None] * eye_SxS[None, None, None, :, None, :, None]).reshape(
      b, h, nc, ns, u, q)
  o_BxHxCxQxV = _mm("bhcij,bhcjv->bhciv", a_BxHxCxSxUxQ.reshape(b, h, nc, q, q).astype(cdt),
                    v_BxHxCxSxUxV.reshape(b, h, nc, q, dv))

  # 3. The state each chunk adds, decayed to the chunk's end; across chunks by one matmul.
  kend_BxHxCxSxUxK = ks_BxHxCxSxUxK * jnp.exp(_sum_after(sub_BxHxCxSxK, axis=3))[:, :, :, :, None]
  st_BxHxCxKxV = _mm("bhcsuk,bhcsuv->bhckv", kend_BxHxCxSxUxK.astype(cdt), v_BxHxCxSxUxV)
  across_BxHxCxCxK = jnp.exp(between(jnp.sum(sub_BxHxCxSxK, axis=3)))
  s_in_BxHxCxKxV = _mm("bhzck,bhckv->bhzkv", across_BxHxCxCxK, st_BxHxCxKxV)

  # 4. Each position reads the incoming state, decayed from the chunk's start (exclusive).
  rstart_BxHxCxSxUxK = rs_BxHxCxSxUxK * jnp.exp(_sum_before(sub_BxHxCxSxK, axis=3))[:, :, :, :, None]
  o_BxHxCxQxV += _mm("bhcqk,bhckv->bhcqv", rstart_BxHxCxSxUxK.reshape(b, h, nc, q, dk).astype(cdt),
                     s_in_BxHxCxKxV.astype(cdt))
  return o_BxHxCxQxV.transpose(0, 2, 3, 1, 4).reshape(b, nc * q, h, dv)[:, :t]


def wkv_reference(r_BxTxHxK, k_BxTxHxK, v_BxTxHxV, lw_BxTxHxK, u_HxK):
  """The recurrence token by token (lax.scan over time), in float32; for tests only."""
  b, _, h, dk = r_BxTxHxK.shape
  dv = v_BxTxHxV.shape[-1]
  u_1xHxKx1 = u_HxK.astype(F32)[None, :, :, None]

  def step(s_BxHxKxV, inputs):
    r_BxHxK, k_BxHxK, v_BxHxV, lw_BxHxK = inputs
    kv_BxHxKxV = k_BxHxK[..., :, None] * v_BxHxV[..., None, :]
    o_BxHxV = jnp.einsum("bhk,bhkv->bhv", r_BxHxK, s_BxHxKxV + u_1xHxKx1 * kv_BxHxKxV)
    return jnp.exp(lw_BxHxK)[..., None] * s_BxHxKxV + kv_BxHxKxV, o_BxHxV

  xs = tuple(jnp.moveaxis(x.astype(F32), 1, 0) for x in (r_BxTxHxK, k_BxTxHxK, v_BxTxHxV, lw_BxTxHxK))
  _, o_TxBxHxV = jax.lax.scan(step, jnp.zeros((b, h, dk, dv), F32), xs)
  return jnp.moveaxis(o_TxBxHxV, 0, 1)
