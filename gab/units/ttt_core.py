"""TTT-Linear math as pure jnp functions: the dual (chunked) training form and its reference.

Each head keeps an inner linear model `f(z) = z + LN_h(z W + b)` and trains it on the sequence as it
goes: within a mini-batch of `mb` tokens every gradient is taken at the state the mini-batch started
from, and row i of the mini-batch sees the updates of tokens j <= i (SEEDS.md section 5; TTT,
arXiv 2407.04620, section 2.7, as ported by Genesys from test-time-training/ttt-lm-jax).

Shapes: B batch, T length, H heads, F head size, E = F + 1 (a weight matrix with its bias as an extra
row), C mini-batches of mb tokens each. Everything here runs in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LN_EPS = 1e-6


def rotary_interleaved(x_BxTxHxF, positions_BxT, base: float = 10000.0):
  """Rotary embedding on interleaved pairs (2i, 2i+1) with angle p * base^(-2i/F), as in [TJ].

  Returns float32, the precision the inner loop runs in.
  """
  b, t, h, f = x_BxTxHxF.shape
  freqs = base ** (-jnp.arange(0, f, 2, dtype=jnp.float32) / f)
  angles_BxTxP = positions_BxT[:, :, None].astype(jnp.float32) * freqs[None, None, :]
  cos = jnp.cos(angles_BxTxP)[:, :, None, :]
  sin = jnp.sin(angles_BxTxP)[:, :, None, :]
  pairs = x_BxTxHxF.astype(jnp.float32).reshape(b, t, h, f // 2, 2)
  even, odd = pairs[..., 0], pairs[..., 1]
  out = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
  return out.reshape(b, t, h, f)


def layer_norm(z, scale, bias, eps: float = LN_EPS):
  """LayerNorm over the last axis; `scale`/`bias` already shaped to broadcast against `z`."""
  mu = jnp.mean(z, axis=-1, keepdims=True)
  zc = z - mu
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(zc), axis=-1, keepdims=True) + eps)
  return zc * rstd * scale + bias


def ln_l2_grad(z, target, scale, bias, eps: float = LN_EPS):
  """d/dz of 0.5 * ||LN(z) - target||^2 in closed form (what `jax.vjp` of `layer_norm` gives)."""
  mu = jnp.mean(z, axis=-1, keepdims=True)
  zc = z - mu
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(zc), axis=-1, keepdims=True) + eps)
  zhat = zc * rstd
  e = (zhat * scale + bias - target) * scale
  e_mean = jnp.mean(e, axis=-1, keepdims=True)
  ez_mean = jnp.mean(e * zhat, axis=-1, keepdims=True)
  return (e - e_mean - zhat * ez_mean) * rstd


def inner_lr(x_BxTxD, theta_HxD, beta_H, base_lr: float):
  """Per-token, per-head inner learning rate (base_lr / F) * sigmoid(x . theta_h + beta_h): [B,T,H]."""
  h, d = theta_HxD.shape
  logits_BxTxH = jnp.einsum("btd,hd->bth", x_BxTxD.astype(jnp.float32), theta_HxD)
  return (base_lr / (d // h)) * jax.nn.sigmoid(logits_BxTxH + beta_H[None, None, :])


def token_scale(offset_M):
  """Row scale tau_i = max(0, 1/(i+1) + offset_i) of the mini-batch's cumulative gradient: [mb]."""
  mb = offset_M.shape[0]
  return jnp.maximum(0.0, 1.0 / jnp.arange(1, mb + 1, dtype=jnp.float32) + offset_M)


def _augment(x_BxTxHxF):
  """Append a constant-1 feature so one [E, F] matrix holds both W and b."""
  return jnp.concatenate([x_BxTxHxF, jnp.ones_like(x_BxTxHxF[..., :1])], axis=-1)


def _to_chunks(x_BxTxHxX, mb: int):
  """[B, T, H, ...] -> [C, B, H, mb, ...], the scan axis first."""
  b, t, h = x_BxTxHxX.shape[:3]
  rest = x_BxTxHxX.shape[3:]
  x = x_BxTxHxX.reshape((b, t // mb, mb, h) + rest)
  return jnp.moveaxis(x, (1, 3), (0, 2))


@functools.partial(jax.jit, static_argnames=("mini_batch", "unroll"))
def ttt_linear_chunked(q_BxTxHxF, k_BxTxHxF, v_BxTxHxF, lr_BxTxH, tau_M, w_HxFxF, b_HxF,
                       ln_scale_HxF, ln_bias_HxF, mini_batch: int, unroll: int = 1):
  """Dual form: matmuls within each mini-batch, a `lax.scan` across mini-batches for the state only.

  Returns z_BxTxHxF = q + LN_h(q W_bar + b_bar). A ragged length is padded at the end with lr = 0
  (those tokens never update the state) and sliced back; row i only reads columns j <= i.
  Jitted so that eager callers (init, the checker) compile the scan once per shape.
  """
  b, t, h, f = q_BxTxHxF.shape
  pad = -t % mini_batch
  widths = ((0, 0), (0, pad), (0, 0), (0, 0))
  q, k, v = (jnp.pad(a.astype(jnp.float32), widths) for a in (q_BxTxHxF, k_BxTxHxF, v_BxTxHxF))
  lr_BxTxH = jnp.pad(lr_BxTxH.astype(jnp.float32), widths[:3])

  qa_CxBxHxMxE = _to_chunks(_augment(q), mini_batch)
  ka_CxBxHxMxE = _to_chunks(_augment(k), mini_batch)
  target_CxBxHxMxF = _to_chunks(v - k, mini_batch)
  lr_CxBxHxM = _to_chunks(lr_BxTxH, mini_batch)

  # eta_ij = tau_i * lr_j on j <= i; the rows' bias update and the q.k term share it.
  causal_MxM = jnp.tril(jnp.ones((mini_batch, mini_batch), dtype=bool))
  eta_CxBxHxMxM = tau_M[None, None, None, :, None] * lr_CxBxHxM[..., None, :]
  qk_CxBxHxMxM = jnp.einsum("cbhie,cbhje->cbhij", qa_CxBxHxMxE, ka_CxBxHxMxE)
  mix_CxBxHxMxM = jnp.where(causal_MxM, eta_CxBxHxMxM * qk_CxBxHxMxM, 0.0)
  last_eta_CxBxHxM = tau_M[-1] * lr_CxBxHxM
  ka_eta_CxBxHxMxE = last_eta_CxBxHxM[..., None] * ka_CxBxHxMxE

  scale = ln_scale_HxF[None, :, None, :]
  bias = ln_bias_HxF[None, :, None, :]

  # Only the state is sequential: the scan carries W from one mini-batch to the next and hands out
  # each mini-batch's start state and gradient; the read-out, two matmuls per mini-batch, runs
  # after it as one batched matmul over all mini-batches (fewer ops per step of the loop).
  def step(w_BxHxExF, xs):
    ka, target, ka_eta = xs
    grad_BxHxMxF = ln_l2_grad(ka @ w_BxHxExF, target, scale, bias)
    return w_BxHxExF - jnp.swapaxes(ka_eta, -1, -2) @ grad_BxHxMxF, (w_BxHxExF, grad_BxHxMxF)

  w0_HxExF = jnp.concatenate([w_HxFxF, b_HxF[:, None, :]], axis=1).astype(jnp.float32)
  w0_BxHxExF = jnp.broadcast_to(w0_HxExF[None], (b,) + w0_HxExF.shape)
  xs = (ka_CxBxHxMxE, target_CxBxHxMxF, ka_eta_CxBxHxMxE)
  _, (w_CxBxHxExF, grad_CxBxHxMxF) = jax.lax.scan(step, w0_BxHxExF, xs, unroll=unroll)
  zbar_CxBxHxMxF = qa_CxBxHxMxE @ w_CxBxHxExF - mix_CxBxHxMxM @ grad_CxBxHxMxF

  zbar_BxTxHxF = jnp.moveaxis(zbar_CxBxHxMxF, (0, 2), (1, 3)).reshape(b, t + pad, h, f)[:, :t]
  return q[:, :t] + layer_norm(zbar_BxTxHxF, ln_scale_HxF[None, None], ln_bias_HxF[None, None])


def ttt_linear_reference(q_BxTxHxF, k_BxTxHxF, v_BxTxHxF, lr_BxTxH, tau_M, w_HxFxF, b_HxF,
                         ln_scale_HxF, ln_bias_HxF, mini_batch: int):
  """Step-by-step primal form, one token per `lax.scan` step: for tests only, never for training.

  Carries the mini-batch's start state (W0, b0) and its running lr-weighted gradient sums; the
  gradient of token i is taken at (W0, b0) with `jax.vjp` of the LayerNorm, and token i reads out
  with (W0 - tau_i gW, b0 - tau_i gb). The last token of a mini-batch makes that the new start.
  """
  b, t, h, f = q_BxTxHxF.shape
  scale, bias = ln_scale_HxF[None], ln_bias_HxF[None]

  def step(carry, xs):
    w0, b0, gw, gb = carry
    q_BxHxF, k_BxHxF, v_BxHxF, lr_BxH, i = xs
    z_BxHxF = jnp.einsum("bhf,bhfg->bhg", k_BxHxF, w0) + b0
    out, vjp = jax.vjp(lambda z: layer_norm(z, scale, bias), z_BxHxF)
    (grad_BxHxF,) = vjp(out - (v_BxHxF - k_BxHxF))
    gw = gw + lr_BxH[..., None, None] * k_BxHxF[..., :, None] * grad_BxHxF[..., None, :]
    gb = gb + lr_BxH[..., None] * grad_BxHxF
    w_bar, b_bar = w0 - tau_M[i] * gw, b0 - tau_M[i] * gb
    zbar_BxHxF = jnp.einsum("bhf,bhfg->bhg", q_BxHxF, w_bar) + b_bar
    y_BxHxF = q_BxHxF + layer_norm(zbar_BxHxF, scale, bias)
    last = i == mini_batch - 1
    carry = (jnp.where(last, w_bar, w0), jnp.where(last, b_bar, b0),
             jnp.where(last, 0.0, gw), jnp.where(last, 0.0, gb))
    return carry, y_BxHxF

  w0 = jnp.broadcast_to(w_HxFxF[None].astype(jnp.float32), (b, h, f, f))
  b0 = jnp.broadcast_to(b_HxF[None].astype(jnp.float32), (b, h, f))
  carry = (w0, b0, jnp.zeros_like(w0), jnp.zeros_like(b0))
  time_major = lambda a: jnp.moveaxis(a.astype(jnp.float32), 1, 0)  # noqa: E731
  xs = (time_major(q_BxTxHxF), time_major(k_BxTxHxF), time_major(v_BxTxHxF), time_major(lr_BxTxH),
        jnp.arange(t) % mini_batch)
  _, y_TxBxHxF = jax.lax.scan(step, carry, xs)
  return jnp.moveaxis(y_TxBxHxF, 0, 1)
