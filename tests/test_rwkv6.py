import gab.units.rwkv6  # noqa: F401  (registers RWKV6TimeMix and RWKV6ChannelMix)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gab import checker
from gab.tree import Unit
from gab.units import rwkv6, rwkv6_core

Q = 16  # chunk size of the tests: T = 2Q+5 spans three chunks, the last one ragged
D = 64


def rel_err(a, b):
  return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def time_mix(reference=False, **params):
  return rwkv6.RWKV6TimeMix(unit=Unit.make("RWKV6TimeMix", chunk_size=Q, **params), reference=reference)


def random_params(params, key):
  """Every parameter random (mu, lambda, the bonus u and the biases included), outputs O(1)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  noisy = [jax.random.normal(k, x.shape) * (0.5 if x.ndim == 1 else x.shape[-2] ** -0.5)
           for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noisy)


def setup(length, seed=0, **params):
  kx, kp = jax.random.split(jax.random.key(seed))
  x_BxLxD = jax.random.normal(kx, (2, length, D))
  return x_BxLxD, random_params(time_mix(**params).init(kp, x_BxLxD, {}), kp)


def core_inputs(length, log_scale=1.0):
  kr, kk, kv, kw, ku = jax.random.split(jax.random.key(length), 5)
  r, k = jax.random.normal(kr, (2, length, 3, 8)), jax.random.normal(kk, (2, length, 3, 8))
  v = jax.random.normal(kv, (2, length, 3, 12))
  lw = -jnp.exp(log_scale * jax.random.normal(kw, (2, length, 3, 8)))  # up to ~e^9 per step
  return r, k, v, lw, jax.random.normal(ku, (3, 8))


def chunked(*inputs):
  return rwkv6_core.wkv_chunked(*inputs, chunk_size=Q, sub_chunk=8)


@pytest.mark.parametrize("length,log_scale", [(2 * Q, 1.0), (2 * Q + 5, 1.0), (2 * Q + 5, 3.0)])
def test_chunked_core_matches_recurrence(length, log_scale):
  inputs = core_inputs(length, log_scale)
  assert rel_err(jax.jit(chunked)(*inputs), jax.jit(rwkv6_core.wkv_reference)(*inputs)) <= 1e-4


def test_chunked_core_gradients_match_recurrence():
  """The gradients of every input, through the custom VJP of the intra-sub-block scores."""
  inputs = core_inputs(2 * Q + 5)
  cot = jax.random.normal(jax.random.key(7), (2, 2 * Q + 5, 3, 12))
  grads = [jax.jit(jax.grad(lambda *xs, f=f: jnp.sum(f(*xs) * cot), argnums=(0, 1, 2, 3, 4)))(*inputs)
           for f in (chunked, rwkv6_core.wkv_reference)]
  for fast, ref in zip(*grads):
    assert rel_err(fast, ref) <= 1e-4


@pytest.mark.parametrize("length,params", [
    (2 * Q + 5, {}), (2 * Q, dict(n_heads=2, key_ratio=1.0, norm="groupnorm", gate="dense"))])
def test_unit_fast_form_matches_reference(length, params):
  x_BxLxD, variables = setup(length, **params)
  fast, _ = jax.jit(time_mix(**params).apply)(variables, x_BxLxD, {})
  ref, _ = jax.jit(time_mix(reference=True, **params).apply)(variables, x_BxLxD, {})
  assert rel_err(fast, ref) <= 1e-4


def test_causality_with_random_parameters():
  length = 2 * Q + 5
  x_BxLxD, variables = setup(length, seed=1)
  fn = jax.jit(lambda x: time_mix().apply(variables, x, {})[0])
  y_BxLxD = fn(x_BxLxD)
  _, vjp = jax.vjp(fn, x_BxLxD)
  for t in (0, Q - 1, Q, Q + 1, length - 2):
    (grad_BxLxD,) = vjp(jnp.zeros_like(y_BxLxD).at[:, t].set(1.0))
    assert not np.any(np.asarray(grad_BxLxD[:, t + 1:])), f"output {t} reads later inputs"
    assert np.any(np.asarray(grad_BxLxD[:, :t + 1]))
    flipped = fn(x_BxLxD.at[:, t + 1:].multiply(-1.0))  # Genesys's check: negate the future
    np.testing.assert_array_equal(flipped[:, :t + 1], y_BxLxD[:, :t + 1])


@pytest.mark.slow  # ~2 min: the full check
def test_seed_passes_the_checker():
  tree = rwkv6.seed()
  assert tree.render() == ("Sequence(Residual(Sequence(LayerNorm, RWKV6TimeMix[chunk_size=32, "
                           "gate=lora, key_ratio=0.5, n_heads=4, norm=layernorm])), Residual("
                           "Sequence(LayerNorm, RWKV6ChannelMix[hidden_ratio=3.5])))")
  report = checker.check(tree)
  assert report.passed, report.to_json()
  assert {c.status for c in report.checks} == {"pass"}


def test_tiny_lm_trains(tiny_lm_losses):
  losses = tiny_lm_losses(rwkv6.seed(), d_model=D, length=64)
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5, losses
