"""Attention implementation selection, the chunked cross-entropy and remat policies (CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gab import seeds
from gab.model import LM
from gab.tree import Unit
from gab.units import attention_impl
from train import loss, trainer

BF16 = jnp.bfloat16


@pytest.mark.parametrize("requested,facts,expected", [
    ("auto", dict(platform="cpu", dtype=BF16, seq_len=2048, head_dim=64), "xla"),
    ("auto", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=64, compute_capability="9.0"), "cudnn"),
    ("auto", dict(platform="gpu", dtype=jnp.float32, seq_len=2048, head_dim=64, compute_capability="9.0"), "xla"),
    ("auto", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=64, compute_capability="7.5"), "xla"),
    ("auto", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=160, compute_capability="8.0"), "xla"),
    ("auto", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=160, compute_capability="9.0"), "cudnn"),
    ("auto", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=12, compute_capability="9.0"), "xla"),
    ("auto", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=64, window=64, compute_capability="9.0"), "cudnn"),
    ("auto", dict(platform="tpu", dtype=BF16, seq_len=2048, head_dim=64), "pallas"),
    ("auto", dict(platform="tpu", dtype=BF16, seq_len=2048, head_dim=64, window=128), "xla"),
    ("auto", dict(platform="tpu", dtype=BF16, seq_len=100, head_dim=64), "xla"),
    ("xla", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=64, compute_capability="9.0"), "xla"),
    ("cudnn", dict(platform="cpu", dtype=BF16, seq_len=2048, head_dim=64), "xla"),
    ("cudnn", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=64, compute_capability="8.6"), "cudnn"),
    ("pallas", dict(platform="gpu", dtype=BF16, seq_len=2048, head_dim=64, compute_capability="9.0"), "xla"),
    ("pallas", dict(platform="tpu", dtype=jnp.float32, seq_len=256, head_dim=128), "pallas"),
])
def test_choose(requested, facts, expected):
  impl, why = attention_impl.choose(requested, **facts)
  assert impl == expected, why


def test_unknown_implementation_is_one_clear_error():
  with pytest.raises(ValueError, match=r"train.attention 'flash': expected one of"):
    attention_impl.choose("flash", platform="cpu", dtype=BF16, seq_len=8, head_dim=8)
  with pytest.raises(ValueError, match="train.attention"):
    with attention_impl.use("flash"):
      pass


def _reference_attention(q, k, v, window=None):
  """Plain float32 softmax attention, written out."""
  h, g = q.shape[2], k.shape[2]
  k, v = jnp.repeat(k, h // g, axis=2), jnp.repeat(v, h // g, axis=2)
  s = jnp.einsum("blhk,bmhk->bhlm", q.astype(jnp.float32), k.astype(jnp.float32))
  s = s / np.sqrt(q.shape[-1])
  t = jnp.arange(q.shape[1])
  mask = t[None, :] <= t[:, None]
  if window is not None:
    mask &= t[None, :] > t[:, None] - window
  p = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)
  return jnp.einsum("bhlm,bmhk->blhk", p, v.astype(jnp.float32))


@pytest.mark.parametrize("dtype,tol,groups,window", [
    (jnp.float32, 1e-5, 4, None), (BF16, 3e-2, 2, None), (BF16, 3e-2, 4, 5)])
def test_every_implementation_computes_causal_softmax_attention(dtype, tol, groups, window):
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(kq, (2, 16, 4, 8), dtype)
  k = jax.random.normal(kk, (2, 16, groups, 8), dtype)
  v = jax.random.normal(kv, (2, 16, groups, 8), dtype)
  want = _reference_attention(q, k, v, window)
  for impl in attention_impl.IMPLEMENTATIONS:  # on CPU: every request runs (or falls back to) XLA
    with attention_impl.use(impl):
      got = attention_impl.dot_product_attention(q, k, v, window=window)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ["gpt"])
def test_seed_outputs_equal_across_implementations(name):
  tokens = jax.random.randint(jax.random.key(1), (2, 32), 0, 259)
  outs = {}
  for impl in attention_impl.IMPLEMENTATIONS:
    model = LM(seeds.seed(name), 259, 32, 2, dtype=BF16, attention=impl)
    params = model.init(jax.random.key(0), tokens)
    outs[impl] = np.asarray(model.apply(params, tokens))
  for impl, out in outs.items():
    np.testing.assert_allclose(out, outs["auto"], atol=2e-2, rtol=2e-2, err_msg=impl)


def test_windowed_and_grouped_units_use_the_selection():
  tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 259)
  for kind, hp in (("SlidingWindowAttention", {"window": 16}), ("GQAttention", {"n_kv_heads": 2})):
    tree = seeds.seed("gpt")
    swapped = _swap_attention(tree, kind, hp)
    a = LM(swapped, 259, 32, 1, attention="xla")
    b = LM(swapped, 259, 32, 1, attention="cudnn")  # falls back to XLA on CPU, with a warning
    params = a.init(jax.random.key(0), tokens)
    np.testing.assert_allclose(a.apply(params, tokens), b.apply(params, tokens), atol=1e-6)


def _swap_attention(tree: Unit, kind: str, hp: dict) -> Unit:
  if tree.kind == "Attention":
    return Unit.make(kind, **{**dict(tree.params), **hp})
  return Unit(tree.kind, tree.params, tuple(_swap_attention(c, kind, hp) for c in tree.children))


def test_chunk_len():
  assert loss.chunk_len(8, 256, 259) == 256  # small shapes: one chunk, the plain computation
  assert loss.chunk_len(64, 2048, 32000) == 32  # [64, 32, 32000] float32 = 256 MiB
  assert loss.chunk_len(2, 12, 100, budget_bytes=2 * 4 * 100 * 5) == 4


def test_chunked_cross_entropy_equals_full_logits():
  tokens = jax.random.randint(jax.random.key(2), (2, 33), 0, 259)
  model = LM(seeds.seed("gpt"), 259, 32, 2)
  params = model.init(jax.random.key(0), tokens[:, :-1])

  def full(p):
    logp = jax.nn.log_softmax(model.apply(p, tokens[:, :-1]), axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]

  def chunked(p):
    x, _ = model.apply(p, tokens[:, :-1], method=LM.features)
    head = lambda h: model.apply(p, h, method=LM.head)  # noqa: E731
    return loss.chunked_nll(head, x, tokens[:, 1:], 259, budget_bytes=2 * 8 * 259 * 4)

  np.testing.assert_allclose(chunked(params), full(params), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(trainer.token_nll(model, params, tokens), full(params), rtol=1e-6)
  g_full = jax.grad(lambda p: full(p).mean())(params)
  g_chunk = jax.grad(lambda p: chunked(p).mean())(params)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_chunk)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(chunked)(params))
  assert "2,8,259" in jaxpr.replace(" ", "") and "2,32,259" not in jaxpr.replace(" ", "")


@pytest.mark.parametrize("policy", [True, "dots"])
def test_remat_policies_keep_the_gradients(policy):
  tokens = jax.random.randint(jax.random.key(3), (2, 17), 0, 259)
  plain = LM(seeds.seed("gpt"), 259, 32, 2)
  remat = LM(seeds.seed("gpt"), 259, 32, 2, remat=policy)  # True: "full"
  params = plain.init(jax.random.key(0), tokens[:, :-1])
  grads = [jax.grad(lambda p, m=m: trainer.token_nll(m, p, tokens).mean())(params)
           for m in (plain, remat)]
  for a, b in zip(*(jax.tree.leaves(g) for g in grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="remat_policy"):
    LM(seeds.seed("gpt"), 259, 32, 2, remat="most").init(jax.random.key(0), tokens)
