"""Cross-entropy without the whole float32 logits tensor: the head applied a few positions at a time.

At the paper's shapes the logits of one micro-batch are [B, 2048, 32000] float32 (B = 64: 16 GiB),
and the backward pass would keep them too. `chunked_nll` cuts the sequence into chunks of C
positions, computes each chunk's logits, log-sum-exp and target logit inside a rematerialised
scan body, and keeps only the per-token NLL: at most [B, C, V] logits live at once, forward or
backward. C is the largest divisor of L with B x C x V x 4 bytes <= `budget_bytes`, so small
shapes use a single chunk (the plain computation).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LOGITS_BUDGET_BYTES = 1 << 28  # 256 MiB of float32 logits per chunk


def chunk_len(batch: int, length: int, vocab: int, budget_bytes: int = LOGITS_BUDGET_BYTES) -> int:
  """The largest divisor of `length` whose [batch, chunk, vocab] float32 logits fit the budget."""
  best = 1
  for c in range(1, length + 1):
    if length % c == 0 and batch * c * vocab * 4 <= budget_bytes:
      best = c
  return best


def _nll(head: Callable, x_BxCxD, targets_BxC):
  logp_BxCxV = jax.nn.log_softmax(head(x_BxCxD), axis=-1)
  return -jnp.take_along_axis(logp_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]


def chunked_nll(head: Callable, x_BxLxD, targets_BxL, vocab: int,
                budget_bytes: int = LOGITS_BUDGET_BYTES):
  """Per-token NLL (nats) [B, L] of `targets` under float32 logits `head(x)`, chunked over L."""
  b, l, d = x_BxLxD.shape
  c = chunk_len(b, l, vocab, budget_bytes)
  if c == l:
    return _nll(head, x_BxLxD, targets_BxL)
  n = l // c
  x_NxBxCxD = x_BxLxD.reshape(b, n, c, d).swapaxes(0, 1)
  t_NxBxC = targets_BxL.reshape(b, n, c).swapaxes(0, 1)
  body = jax.checkpoint(lambda xt: _nll(head, *xt))
  nll_NxBxC = jax.lax.map(body, (x_NxBxCxD, t_NxBxC))
  return nll_NxBxC.swapaxes(0, 1).reshape(b, l)
