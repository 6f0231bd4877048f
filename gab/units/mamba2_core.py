"""The SSD (state-space duality) core of Mamba2 as pure functions: a chunked form and a reference.

Per head h, with state h_t of shape [P, N] and h_{-1} = 0:

  h_t = exp(dt_t A) h_{t-1} + dt_t x_t^T B_t,    y_t = h_t C_t^T (+ D x_t)

`ssd_chunked` is the training form (Mamba-2 paper, Listing 1): matmuls inside chunks of Q steps and
one small [nc+1, nc+1] matmul across chunks, so there is no scan over time. `ssd_reference` runs
the recurrence step by step and exists only to test the chunked form against.

Shapes: x [B, T, H, P], dt [B, T, H] (after softplus, >= 0), A [H] (< 0), B and C [B, T, G, N]
with G dividing H (head h reads group h // (H / G)), D [H] or None. Decays, their cumulative sums
and every exp run in float32; matmuls take x's dtype and accumulate in float32.
"""

import jax
import jax.numpy as jnp

F32 = jnp.float32


def segsum(a_xQ):
  """S[..., i, j] = a[j+1] + ... + a[i] for i >= j and -inf above the diagonal.

  Summing a masked copy of `a` down the rows avoids subtracting two large cumulative sums.
  """
  q = a_xQ.shape[-1]
  lead = (1,) * (a_xQ.ndim - 1)
  rows = jnp.arange(q).reshape(lead + (q, 1))
  cols = jnp.arange(q).reshape(lead + (1, q))
  a_xQxQ = jnp.broadcast_to(a_xQ[..., :, None], a_xQ.shape + (q,))
  a_xQxQ = jnp.where(rows > cols, a_xQxQ, 0.0)
  s_xQxQ = jnp.cumsum(a_xQxQ, axis=-2)
  return jnp.where(rows >= cols, s_xQxQ, -jnp.inf)


def _mm(spec, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=F32)


def ssd_chunked(x_BxTxHxP, dt_BxTxH, a_H, b_BxTxGxN, c_BxTxGxN, d_H=None, chunk_size: int = 64):
  """The chunked SSD; T need not be a multiple of `chunk_size` (the end is padded with dt=x=B=C=0)."""
  bsz, t, h, p = x_BxTxHxP.shape
  g, n = b_BxTxGxN.shape[-2:]
  hg, q = h // g, chunk_size
  nc = -(-t // q)
  pad = nc * q - t
  cdt = x_BxTxHxP.dtype

  def chunks(v, dtype):
    v = jnp.pad(v.astype(dtype), [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
    return v.reshape((bsz, nc, q) + v.shape[2:])

  dt_BxCxQxH = chunks(dt_BxTxH, F32)
  xdt_BxCxQxGxKxP = (chunks(x_BxTxHxP, F32) * dt_BxCxQxH[..., None]).astype(cdt).reshape(
      bsz, nc, q, g, hg, p)
  b_BxCxQxGxN = chunks(b_BxTxGxN, cdt)
  c_BxCxQxGxN = chunks(c_BxTxGxN, cdt)
  a_BxCxGxKxQ = (dt_BxCxQxH * a_H.astype(F32)[None, None, None, :]).reshape(
      bsz, nc, q, g, hg).transpose(0, 1, 3, 4, 2)
  acs_BxCxGxKxQ = jnp.cumsum(a_BxCxGxKxQ, axis=-1)

  # 1. Within each chunk: masked "attention" (C B^T) * L applied to dt*x.
  l_BxCxGxKxQxQ = jnp.exp(segsum(a_BxCxGxKxQ))
  cb_BxCxGxQxQ = _mm("bclgn,bcsgn->bcgls", c_BxCxQxGxN, b_BxCxQxGxN)
  m_BxCxGxKxQxQ = (cb_BxCxGxQxQ[:, :, :, None] * l_BxCxGxKxQxQ).astype(cdt)
  y_BxCxQxGxKxP = _mm("bcghls,bcsghp->bclghp", m_BxCxGxKxQxQ, xdt_BxCxQxGxKxP)

  # 2. The state each chunk adds, decayed to the chunk's end.
  decay_BxCxQxGxK = jnp.exp(acs_BxCxGxKxQ[..., -1:] - acs_BxCxGxKxQ).transpose(0, 1, 4, 2, 3)
  st_BxCxGxKxPxN = _mm("bclghp,bclgn->bcghpn",
                       (xdt_BxCxQxGxKxP * decay_BxCxQxGxK[..., None]).astype(cdt), b_BxCxQxGxN)

  # 3. Across chunks: S_in[z] sums the states of chunks c < z, decayed through the chunks between.
  tot_BxGxKxC = jnp.pad(acs_BxCxGxKxQ[..., -1].transpose(0, 2, 3, 1), [(0, 0)] * 3 + [(1, 0)])
  across_BxGxKxZxC = jnp.exp(segsum(tot_BxGxKxC))[..., :-1, 1:]
  s_in_BxCxGxKxPxN = _mm("bghzc,bcghpn->bzghpn", across_BxGxKxZxC, st_BxCxGxKxPxN)

  # 4. Each position reads the incoming state, decayed from the chunk's start.
  y_off_BxCxQxGxKxP = _mm("bclgn,bcghpn->bclghp", c_BxCxQxGxN, s_in_BxCxGxKxPxN.astype(cdt))
  y_off_BxCxQxGxKxP = y_off_BxCxQxGxKxP * jnp.exp(acs_BxCxGxKxQ).transpose(0, 1, 4, 2, 3)[..., None]

  y_BxTxHxP = (y_BxCxQxGxKxP + y_off_BxCxQxGxKxP).reshape(bsz, nc * q, h, p)[:, :t]
  if d_H is not None:
    y_BxTxHxP = y_BxTxHxP + x_BxTxHxP.astype(F32) * d_H.astype(F32)[None, None, :, None]
  return y_BxTxHxP.astype(cdt)


def ssd_reference(x_BxTxHxP, dt_BxTxH, a_H, b_BxTxGxN, c_BxTxGxN, d_H=None):
  """The recurrence, one step at a time in float32 (for tests only; O(T) sequential steps)."""
  bsz, _, h, p = x_BxTxHxP.shape
  g, n = b_BxTxGxN.shape[-2:]
  heads_of_group = lambda v: jnp.repeat(v.astype(F32), h // g, axis=2)  # noqa: E731
  xs = (x_BxTxHxP.astype(F32), dt_BxTxH.astype(F32), heads_of_group(b_BxTxGxN), heads_of_group(c_BxTxGxN))

  def step(h_BxHxPxN, inputs):
    x_BxHxP, dt_BxH, b_BxHxN, c_BxHxN = inputs
    decay_BxH = jnp.exp(dt_BxH * a_H.astype(F32)[None, :])
    h_BxHxPxN = (decay_BxH[..., None, None] * h_BxHxPxN
                 + (dt_BxH[..., None] * x_BxHxP)[..., None] * b_BxHxN[:, :, None, :])
    return h_BxHxPxN, jnp.einsum("bhpn,bhn->bhp", h_BxHxPxN, c_BxHxN)

  h0 = jnp.zeros((bsz, h, p, n), F32)
  _, y_TxBxHxP = jax.lax.scan(step, h0, jax.tree.map(lambda v: jnp.moveaxis(v, 1, 0), xs))
  y_BxTxHxP = jnp.moveaxis(y_TxBxHxP, 0, 1)
  if d_H is not None:
    y_BxTxHxP = y_BxTxHxP + x_BxTxHxP.astype(F32) * d_H.astype(F32)[None, None, :, None]
  return y_BxTxHxP.astype(x_BxTxHxP.dtype)


def causal_depthwise_conv(x_BxTxC, w_KxC, b_C):
  """y_t = b + sum_i w_i x_{t-K+1+i}: a width-K depthwise conv padded on the left only.

  K shifted multiply-adds; on CPU this is faster than XLA's grouped convolution.
  """
  k, t = w_KxC.shape[0], x_BxTxC.shape[1]
  xp_BxTxC = jnp.pad(x_BxTxC, [(0, 0), (k - 1, 0), (0, 0)])
  w_KxC = w_KxC.astype(x_BxTxC.dtype)
  y_BxTxC = b_C.astype(x_BxTxC.dtype)[None, None, :]
  for i in range(k):
    y_BxTxC = y_BxTxC + xp_BxTxC[:, i:i + t] * w_KxC[i][None, None, :]
  return y_BxTxC
