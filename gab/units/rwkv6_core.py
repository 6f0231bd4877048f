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
chunking), each chunk is split into sub-blocks of U steps. Scores between two sub-blocks J < I are
matmuls: r is decayed from the start of its sub-block, k to the end of its own, and the decay of
the sub-blocks between them multiplies k per channel (every exponent <= 0). Scores inside a
sub-block are summed channel by channel over a [K, U, U] tensor of decays (`inside_scores`, with a
memory-lean custom VJP). Log-decays between two steps are summed directly, never taken as a
difference of cumulative sums, so the chunked form matches the recurrence even for decays of
thousands per step.

Shapes: r, k, lw [B, T, H, K]; v [B, T, H, V]; u [H, K]. Log-decays, their sums and every exp run
in float32; matmuls take r's dtype and accumulate in float32.
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


def _steps_between(m: int):
  """sel[i, j, l] = 1 where j < l < i: the steps strictly between j and i."""
  i = jnp.arange(m)
  return ((i[None, None, :] > i[None, :, None]) & (i[None, None, :] < i[:, None, None])).astype(F32)


def between(a_xMxK):
  """E[..., i, j, :] = a[j+1] + ... + a[i-1] for j < i and -inf for j >= i (time is axis -2).

  The log-decay from step j to step i, exclusive at both ends, summed directly (a matmul with a 0/1
  matrix, in full float32) rather than as a difference of two large cumulative sums.
  """
  m = a_xMxK.shape[-2]
  sums_xMxMxK = jnp.einsum("ijl,...lk->...ijk", _steps_between(m), a_xMxK,
                           precision=jax.lax.Precision.HIGHEST)
  later_MxMx1 = (jnp.arange(m)[:, None] > jnp.arange(m)[None, :])[:, :, None]
  return jnp.where(later_MxMx1, sums_xMxMxK, -jnp.inf)


@jax.custom_vjp
def inside_scores(r_ZxKxU, k_ZxKxU, lw_ZxKxU):
  """A[z, i, j] = sum_c r_ci k_cj exp(lw_{c,j+1} + ... + lw_{c,i-1}) for j < i, else 0.

  The scores within a sub-block, channel by channel (time is the last axis, so the [K, U, U] decays
  come out of one matmul without transposes). Its VJP recomputes the decays instead of keeping
  them and the same-sized temporaries autodiff would make: this part would otherwise dominate the
  layer's activation memory.
  """
  return _inside_fwd(r_ZxKxU, k_ZxKxU, lw_ZxKxU)[0]


def _decays(lw_ZxKxU):
  u = lw_ZxKxU.shape[-1]
  sums_ZxKxUxU = jnp.einsum("ijl,zkl->zkij", _steps_between(u), lw_ZxKxU,
                            precision=jax.lax.Precision.HIGHEST)
  later_UxU = jnp.arange(u)[:, None] > jnp.arange(u)[None, :]
  return jnp.exp(jnp.where(later_UxU[None, None], sums_ZxKxUxU, -jnp.inf))


def _inside_fwd(r_ZxKxU, k_ZxKxU, lw_ZxKxU):
  a_ZxUxU = jnp.sum(r_ZxKxU[..., :, None] * k_ZxKxU[..., None, :] * _decays(lw_ZxKxU), axis=1)
  return a_ZxUxU, (r_ZxKxU, k_ZxKxU, lw_ZxKxU)


def _inside_bwd(residuals, da_ZxUxU):
  r_ZxKxU, k_ZxKxU, lw_ZxKxU = residuals
  w_ZxKxUxU = da_ZxUxU[:, None] * _decays(lw_ZxKxU)
  dr_ZxKxU = jnp.sum(w_ZxKxUxU * k_ZxKxU[..., None, :], axis=-1)
  dk_ZxKxU = jnp.sum(w_ZxKxUxU * r_ZxKxU[..., :, None], axis=-2)
  de_ZxKxUxU = w_ZxKxUxU * r_ZxKxU[..., :, None] * k_ZxKxU[..., None, :]
  dlw_ZxKxU = jnp.einsum("ijl,zkij->zkl", _steps_between(lw_ZxKxU.shape[-1]), de_ZxKxUxU,
                         precision=jax.lax.Precision.HIGHEST)
  return dr_ZxKxU, dk_ZxKxU, dlw_ZxKxU


inside_scores.defvjp(_inside_fwd, _inside_bwd)


def wkv_chunked(r_BxTxHxK, k_BxTxHxK, v_BxTxHxV, lw_BxTxHxK, u_HxK, chunk_size: int = 32,
                sub_chunk: int = 8):
  """The chunked WKV; T need not be a multiple of `chunk_size` (the end is padded with r=k=v=lw=0).

  Returns o [B, T, H, V] in float32. Batch and heads share one axis (BH), and chunks (C) of Q steps
  split into S sub-blocks of U steps, which keeps every tensor at rank <= 6 (XLA:CPU in jaxlib
  0.10 segfaults on the gradient of some rank-7 broadcasts).
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
    x = x.reshape(b, nc, ns, u, h, x.shape[-1]).transpose(0, 4, 1, 2, 3, 5)
    return x.reshape((b * h,) + x.shape[2:])

  r_BHxCxSxUxK = blocks(r_BxTxHxK, F32)
  k_BHxCxSxUxK = blocks(k_BxTxHxK, F32)
  v_BHxCxSxUxV = blocks(v_BxTxHxV, cdt)
  lw_BHxCxSxUxK = blocks(lw_BxTxHxK, F32)
  sub_BHxCxSxK = jnp.sum(lw_BHxCxSxUxK, axis=3)
  # r decayed from its sub-block's start, k decayed to its sub-block's end: exponents <= 0.
  rs_BHxCxSxUxK = r_BHxCxSxUxK * jnp.exp(_sum_before(lw_BHxCxSxUxK, axis=3))
  ks_BHxCxSxUxK = k_BHxCxSxUxK * jnp.exp(_sum_after(lw_BHxCxSxUxK, axis=3))

  # 1. Scores between sub-blocks J < I of a chunk: matmuls, decayed across the sub-blocks between.
  gap_BHxCxSxSx1xK = jnp.exp(between(sub_BHxCxSxK))[:, :, :, :, None]
  kgap_BHxCxSxQxK = (ks_BHxCxSxUxK[:, :, None] * gap_BHxCxSxSx1xK).reshape(b * h, nc, ns, q, dk)
  a_BHxCxSxUxQ = _mm("zcsik,zcsjk->zcsij", rs_BHxCxSxUxK.astype(cdt), kgap_BHxCxSxQxK.astype(cdt))

  # 2. Scores inside a sub-block: strictly lower, channel by channel; the bonus on the diagonal.
  def flat(x):
    return x.reshape((-1,) + x.shape[3:]).swapaxes(1, 2)

  a_BHxCxSxUxU = inside_scores(flat(r_BHxCxSxUxK), flat(k_BHxCxSxUxK), flat(lw_BHxCxSxUxK)).reshape(
      b * h, nc, ns, u, u)
  u_BHxK = jnp.tile(u_HxK.astype(F32), (b, 1))
  bonus_BHxCxSxU = jnp.sum(r_BHxCxSxUxK * k_BHxCxSxUxK * u_BHxK[:, None, None, None], axis=-1)
  a_BHxCxSxUxU += bonus_BHxCxSxU[..., None] * jnp.eye(u, dtype=F32)[None, None, None]
  diag_SxS = jnp.eye(ns, dtype=F32)[None, None, :, None, :, None]
  a_BHxCxSxUxQ += (a_BHxCxSxUxU[:, :, :, :, None] * diag_SxS).reshape(b * h, nc, ns, u, q)
  o_BHxCxQxV = _mm("zcij,zcjv->zciv", a_BHxCxSxUxQ.reshape(b * h, nc, q, q).astype(cdt),
                   v_BHxCxSxUxV.reshape(b * h, nc, q, dv))

  # 3. The state each chunk adds, decayed to the chunk's end; across chunks by one matmul.
  kend_BHxCxSxUxK = ks_BHxCxSxUxK * jnp.exp(_sum_after(sub_BHxCxSxK, axis=2))[:, :, :, None]
  st_BHxCxKxV = _mm("zcsuk,zcsuv->zckv", kend_BHxCxSxUxK.astype(cdt), v_BHxCxSxUxV)
  across_BHxCxCxK = jnp.exp(between(jnp.sum(sub_BHxCxSxK, axis=2)))
  s_in_BHxCxKxV = _mm("zyck,zckv->zykv", across_BHxCxCxK, st_BHxCxKxV)

  # 4. Each position reads the incoming state, decayed from the chunk's start (exclusive).
  rstart_BHxCxSxUxK = rs_BHxCxSxUxK * jnp.exp(_sum_before(sub_BHxCxSxK, axis=2))[:, :, :, None]
  o_BHxCxQxV += _mm("zcqk,zckv->zcqv", rstart_BHxCxSxUxK.reshape(b * h, nc, q, dk).astype(cdt),
                    s_in_BHxCxKxV.astype(cdt))
  o_BxHxTxV = o_BHxCxQxV.reshape(b, h, nc * q, dv)
  return o_BxHxTxV.transpose(0, 2, 1, 3)[:, :t]


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
