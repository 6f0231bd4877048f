"""Cross-entropy under the tied head without the whole float32 logits tensor.

At the paper's shapes the logits of one micro-batch are [B, 2048, 32000] float32 (B = 64: 16 GiB).
Both losses here cut the sequence into chunks of C positions, so at most [B, C, V] logits exist at
once; C is the largest divisor of L with B x C x V x 4 bytes <= `budget_bytes` (small shapes: one
chunk, no loop).

- `chunked_nll`: per-token NLL for evaluation (each chunk rematerialised if differentiated).
- `mean_nll`: the training loss, a `jax.custom_vjp` whose forward pass also computes, chunk by
  chunk, the gradients with respect to the hidden states and the head matrix (softmax minus the
  one-hot target, times x or W). The backward pass only scales them by the incoming cotangent, so
  training costs the plain path's three matmuls, with neither [B, L, V] logits nor a recomputed
  forward (a rematerialised chunk loop pays a fourth matmul and a second softmax).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

F32 = jnp.float32
LOGITS_BUDGET_BYTES = 1 << 28  # 256 MiB of float32 logits per chunk


def chunk_len(batch: int, length: int, vocab: int, budget_bytes: int = LOGITS_BUDGET_BYTES) -> int:
  """The largest divisor of `length` whose [batch, chunk, vocab] float32 logits fit the budget."""
  best = 1
  for c in range(1, length + 1):
    if length % c == 0 and batch * c * vocab * 4 <= budget_bytes:
      best = c
  return best


def head_logits(x_xD, w_VxD, dtype):
  """Float32 logits of hidden states under the head W [vocab, d_model]: a matmul in the compute
  dtype accumulated and returned in float32 (`gab.model.LM.head`)."""
  return jnp.einsum("...d,vd->...v", x_xD.astype(dtype), w_VxD.astype(dtype),
                    preferred_element_type=F32)


def _nll(head: Callable, x_BxCxD, targets_BxC):
  logp_BxCxV = jax.nn.log_softmax(head(x_BxCxD), axis=-1)
  return -jnp.take_along_axis(logp_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]


def _to_chunks(c: int, *arrays):
  """[B, L, ...] -> [L / c, B, c, ...] for each array, the chunk axis first."""
  return tuple(a.reshape((a.shape[0], a.shape[1] // c, c) + a.shape[2:]).swapaxes(0, 1)
               for a in arrays)


def _from_chunks(a_NxBxCx):
  n, b, c = a_NxBxCx.shape[:3]
  return a_NxBxCx.swapaxes(0, 1).reshape((b, n * c) + a_NxBxCx.shape[3:])


def chunked_nll(head: Callable, x_BxLxD, targets_BxL, vocab: int,
                budget_bytes: int = LOGITS_BUDGET_BYTES):
  """Per-token NLL (nats) [B, L] of `targets` under float32 logits `head(x)`, chunked over L
  (rematerialised chunk by chunk if differentiated)."""
  b, l, _ = x_BxLxD.shape
  c = chunk_len(b, l, vocab, budget_bytes)
  if c == l:
    return _nll(head, x_BxLxD, targets_BxL)
  body = jax.checkpoint(lambda xt: _nll(head, *xt))
  return _from_chunks(jax.lax.map(body, _to_chunks(c, x_BxLxD, targets_BxL)))


def _chunk_loss_and_grads(x_BxCxD, w_VxD, targets_BxC, dtype, scale):
  """Summed NLL of one chunk and the gradients of `scale` x that sum w.r.t. x and W."""
  logits_BxCxV = head_logits(x_BxCxD, w_VxD, dtype)
  lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
  target_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  onehot_BxCxV = jax.nn.one_hot(targets_BxC, w_VxD.shape[0], dtype=F32)
  g_BxCxV = ((jnp.exp(logits_BxCxV - lse_BxC[..., None]) - onehot_BxCxV) * scale).astype(dtype)
  dx_BxCxD = jnp.einsum("bcv,vd->bcd", g_BxCxV, w_VxD.astype(dtype), preferred_element_type=F32)
  dw_VxD = jnp.einsum("bcv,bcd->vd", g_BxCxV, x_BxCxD.astype(dtype), preferred_element_type=F32)
  return jnp.sum(lse_BxC - target_BxC), dx_BxCxD.astype(x_BxCxD.dtype), dw_VxD


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def mean_nll(x_BxLxD, w_VxD, targets_BxL, dtype, budget_bytes: int = LOGITS_BUDGET_BYTES):
  """Mean NLL (nats) of `targets` under the head W [vocab, d_model] applied to `x` in `dtype`."""
  head = functools.partial(head_logits, w_VxD=w_VxD, dtype=dtype)
  return chunked_nll(head, x_BxLxD, targets_BxL, w_VxD.shape[0], budget_bytes).mean()


def _mean_nll_fwd(x_BxLxD, w_VxD, targets_BxL, dtype, budget_bytes):
  b, l, _ = x_BxLxD.shape
  c = chunk_len(b, l, w_VxD.shape[0], budget_bytes)
  scale = 1.0 / (b * l)
  if c == l:
    total, dx_BxLxD, dw_VxD = _chunk_loss_and_grads(x_BxLxD, w_VxD, targets_BxL, dtype, scale)
  else:
    def step(carry, xt):
      total, dw_VxD = carry
      chunk_total, dx_BxCxD, chunk_dw_VxD = _chunk_loss_and_grads(xt[0], w_VxD, xt[1], dtype, scale)
      return (total + chunk_total, dw_VxD + chunk_dw_VxD), dx_BxCxD
    zeros = (jnp.zeros((), F32), jnp.zeros(w_VxD.shape, F32))
    (total, dw_VxD), dx_NxBxCxD = jax.lax.scan(step, zeros, _to_chunks(c, x_BxLxD, targets_BxL))
    dx_BxLxD = _from_chunks(dx_NxBxCxD)
  return total * scale, (dx_BxLxD, dw_VxD.astype(w_VxD.dtype))


def _mean_nll_bwd(dtype, budget_bytes, residuals, ct):
  del dtype, budget_bytes
  dx_BxLxD, dw_VxD = residuals
  return (ct.astype(dx_BxLxD.dtype) * dx_BxLxD, ct.astype(dw_VxD.dtype) * dw_VxD, None)


mean_nll.defvjp(_mean_nll_fwd, _mean_nll_bwd)
