"""The fused chunked cross-entropy (`gab.loss.mean_nll`) against the plain one: value, gradients,
chunking, and no recomputation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gab import loss

B, L, D, V = 2, 12, 16, 37


def _inputs(dtype):
  kx, kw, kt = jax.random.split(jax.random.key(0), 3)
  x_BxLxD = jax.random.normal(kx, (B, L, D)).astype(dtype)
  w_VxD = 0.3 * jax.random.normal(kw, (V, D))
  return x_BxLxD, w_VxD, jax.random.randint(kt, (B, L), 0, V)


def _plain(x_BxLxD, w_VxD, targets_BxL, dtype):
  logits = jnp.einsum("bld,vd->blv", x_BxLxD.astype(dtype), w_VxD.astype(dtype)).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, targets_BxL[..., None], axis=-1).mean()


@pytest.mark.parametrize("dtype,rtol,budget", [
    (jnp.float32, 1e-5, loss.LOGITS_BUDGET_BYTES),  # one chunk: no loop
    (jnp.float32, 1e-5, B * 4 * V * 4),             # 3 chunks of 4 positions
    (jnp.bfloat16, 2e-2, B * 4 * V * 4)])
def test_value_and_gradients_equal_the_plain_cross_entropy(dtype, rtol, budget):
  x, w, t = _inputs(dtype)
  fused = jax.value_and_grad(lambda x, w: loss.mean_nll(x, w, t, jnp.dtype(dtype), budget), (0, 1))
  plain = jax.value_and_grad(lambda x, w: _plain(x, w, t, dtype), (0, 1))
  (lf, (dxf, dwf)), (lp, (dxp, dwp)) = fused(x, w), plain(x, w)
  np.testing.assert_allclose(lf, lp, rtol=rtol)
  assert dxf.dtype == x.dtype and dwf.dtype == w.dtype
  for got, want in ((dxf, dxp), (dwf, dwp)):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    np.testing.assert_allclose(got, want, atol=rtol * np.abs(want).max())
  # Without differentiation it is the forward alone.
  np.testing.assert_allclose(loss.mean_nll(x, w, t, jnp.dtype(dtype), budget), lp, rtol=rtol)


def test_chunks_hold_the_budget_and_the_backward_recomputes_nothing():
  x, w, t = _inputs(jnp.float32)
  budget = B * 4 * V * 4
  jaxpr = jax.make_jaxpr(jax.grad(lambda x, w: loss.mean_nll(x, w, t, jnp.float32, budget), (0, 1)))(x, w)
  text = str(jaxpr).replace(" ", "")
  assert f"{B},4,{V}" in text and f"{B},{L},{V}" not in text  # [B, 4, V] logits, never [B, L, V]
  assert text.count("dot_general") == 3  # logits, dx, dW: the plain path's three matmuls
