"""The SSD (state-space duality) core of Mamba2 as pure functions: a chunked form and a reference.

Per head h, with state h_t of shape [P, N] and h_{-1} = 0:

  h_t = exp(dt_t A) h_{t-1} + dt_t x_t^T B_t,    y_t = h_t C_t^T (+ D x_t)

`ssd_chunked` is the training form (Mamba-2 paper, Listing 1): matmuls inside chunks of Q steps and
one small [nc+1, nc+1] matmul across chunks, so there is no scan over time. `ssd_reference` runs
the recurrence step by step and exists only to test the chunked form against.

Shapes: x [B, T, H, P], dt [B, T, H] (after softplus, >= 0), A [H] (< 0), B and C [B, T, G, N]
with G dividing H (head h reads group h // (H / G)), D [H] or None. Decays, their cumulative sums
and every exp run in float32; matmuls take x's dtype and accumulate in float32. Inside the chunked
form, C is the chunk index (Z when it is the chunk a state flows into) and Q the position in a chunk.
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
  """The chunked SSD; T need not be a multiple of `chunk_size` (the end is padded with dt=x=B=C=0).

  Inside, tensors are head-major with time last ([B, H, C, P, Q] for x), and B and C (scaled by
  per-head decays) are repeated for the heads of their group, so that every einsum is a plain
  batched matmul: on CPU the SSD's forward and backward run ~1.6x faster than with the natural
  [B, C, Q, H, P] layout, where XLA puts a transpose around each matmul.
  """
  bsz, t, h, p = x_BxTxHxP.shape
  g, n = b_BxTxGxN.shape[-2:]
  q = min(chunk_size, t)
  nc = -(-t // q)
  cdt = x_BxTxHxP.dtype

  def chunked(v, dtype):
    v = jnp.pad(v.astype(dtype), [(0, 0), (0, nc * q - t)] + [(0, 0)] * (v.ndim - 2))
    return v.reshape((bsz, nc, q) + v.shape[2:])

  def per_head(v_BxGxCxQxN):
    v_BxGxKxCxQxN = jnp.broadcast_to(v_BxGxCxQxN[:, :, None], (bsz, g, h // g, nc, q, n))
    return v_BxGxKxCxQxN.reshape(bsz, h, nc, q, n)

  dt_BxHxCxQ = chunked(dt_BxTxH, F32).transpose(0, 3, 1, 2)
  a_BxHxCxQ = dt_BxHxCxQ * a_H.astype(F32).reshape(1, h, 1, 1)
  acs_BxHxCxQ = jnp.cumsum(a_BxHxCxQ, axis=-1)
  xdt_BxHxCxPxQ = (chunked(x_BxTxHxP, F32).transpose(0, 3, 1, 4, 2) * dt_BxHxCxQ[:, :, :, None, :]).astype(cdt)
  b_BxGxCxQxN = chunked(b_BxTxGxN, cdt).transpose(0, 3, 1, 2, 4)
  c_BxGxCxQxN = chunked(c_BxTxGxN, cdt).transpose(0, 3, 1, 2, 4)
  b_BxHxCxQxN, c_BxHxCxQxN = per_head(b_BxGxCxQxN), per_head(c_BxGxCxQxN)

  # 1. Within each chunk: masked "attention" (C B^T) * L applied to dt*x; C B^T once per group.
  cb_BxGxCxQxQ = _mm("bgcln,bgcsn->bgcls", c_BxGxCxQxN, b_BxGxCxQxN)
  l_BxGxKxCxQxQ = jnp.exp(segsum(a_BxHxCxQ)).reshape(bsz, g, h // g, nc, q, q)
  m_BxHxCxQxQ = (cb_BxGxCxQxQ[:, :, None] * l_BxGxKxCxQxQ).reshape(bsz, h, nc, q, q).astype(cdt)
  y_BxHxCxPxQ = _mm("bhcps,bhcls->bhcpl", xdt_BxHxCxPxQ, m_BxHxCxQxQ)

  # 2. The state each chunk adds, decayed to the chunk's end.
  decay_BxHxCxQ = jnp.exp(acs_BxHxCxQ[..., -1:] - acs_BxHxCxQ)
  st_BxHxCxPxN = _mm("bhcpl,bhcln->bhcpn", xdt_BxHxCxPxQ, (b_BxHxCxQxN * decay_BxHxCxQ[..., None]).astype(cdt))

  # 3. Across chunks: S_in[z] sums the states of chunks c < z, decayed through the chunks between.
  tot_BxHxC = jnp.pad(acs_BxHxCxQ[..., -1], [(0, 0), (0, 0), (1, 0)])
  across_BxHxZxC = jnp.exp(segsum(tot_BxHxC))[..., :-1, 1:]
  s_in_BxHxCxPxN = _mm("bhzc,bhcpn->bhzpn", across_BxHxZxC, st_BxHxCxPxN).astype(cdt)

  # 4. Each position reads the incoming state, decayed from the chunk's start.
  y_off_BxHxCxPxQ = _mm("bhcpn,bhcln->bhcpl", s_in_BxHxCxPxN,
                        (c_BxHxCxQxN * jnp.exp(acs_BxHxCxQ)[..., None]).astype(cdt))

  y_BxTxHxP = (y_BxHxCxPxQ + y_off_BxHxCxPxQ).transpose(0, 2, 4, 1, 3).reshape(bsz, nc * q, h, p)[:, :t]
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

  K shifted multiply-adds rather than a grouped `conv_general_dilated`: XLA's cost analysis counts
  the latter as a dense convolution (here it doubled the step's FLOPs), which the checker reads.
  """
  k, t = w_KxC.shape[0], x_BxTxC.shape[1]
  xp_BxTxC = jnp.pad(x_BxTxC, [(0, 0), (k - 1, 0), (0, 0)])
  w_KxC = w_KxC.astype(x_BxTxC.dtype)
  y_BxTxC = b_C.astype(x_BxTxC.dtype)[None, None, :]
  for i in range(k):
    y_BxTxC = y_BxTxC + xp_BxTxC[:, i:i + t] * w_KxC[i][None, None, :]
  return y_BxTxC
