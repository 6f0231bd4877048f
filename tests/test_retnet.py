import gab.units.retnet  # noqa: F401  (registers MultiScaleRetention and RetNetMLP)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gab import checker
from gab.model import initial_z
from gab.tree import Unit
from gab.units import retnet, retnet_core

Q = 16  # chunk size of the tests: T = 2Q+5 spans three chunks, the last one ragged


def rel_err(a, b):
  return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def msr(reference=False, **params):
  unit = Unit.make("MultiScaleRetention", chunk_size=Q, **params)
  return retnet.MultiScaleRetention(unit=unit, reference=reference)


def random_params(params, key):
  """Every parameter random (the head-norm weight included), at a scale that keeps outputs O(1)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  noisy = [jax.random.normal(k, x.shape) * (0.5 if x.ndim == 1 else x.shape[0] ** -0.5)
           for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noisy)


def setup_msr(length, d_model=64, seed=0, **params):
  kx, kp = jax.random.split(jax.random.key(seed))
  x_BxLxD = jax.random.normal(kx, (2, length, d_model))
  z = initial_z(jnp.zeros((2, length), jnp.int32))
  variables = random_params(msr(**params).init(kp, x_BxLxD, z), kp)
  return x_BxLxD, z, variables


@pytest.mark.parametrize("length", [2 * Q, 2 * Q + 5, 5])
def test_chunked_core_matches_recurrence(length):
  kq, kk, kv, kd = jax.random.split(jax.random.key(length), 4)
  q = jax.random.normal(kq, (2, length, 3, 8))
  k = jax.random.normal(kk, (2, length, 3, 8))
  v = jax.random.normal(kv, (2, length, 3, 12))
  log_decay_H = -jax.random.uniform(kd, (3,), minval=1e-3, maxval=2.0)  # faster decays than the seed's
  fast = jax.jit(retnet_core.retention_chunked, static_argnums=4)(q, k, v, log_decay_H, Q)
  ref = jax.jit(retnet_core.retention_recurrent)(q, k, v, log_decay_H)
  assert rel_err(fast, ref) <= 1e-4


@pytest.mark.parametrize("length,params", [(2 * Q, {}), (2 * Q + 5, {}),
                                           (2 * Q + 5, dict(n_heads=2, value_factor=1, rope=False))])
def test_unit_fast_form_matches_reference(length, params):
  x_BxLxD, z, variables = setup_msr(length, **params)
  fast, _ = jax.jit(msr(**params).apply)(variables, x_BxLxD, z)
  ref, _ = jax.jit(msr(reference=True, **params).apply)(variables, x_BxLxD, z)
  assert fast.shape == x_BxLxD.shape
  assert rel_err(fast, ref) <= 1e-4


def test_causality_gradient_is_exactly_zero_after_t():
  length = 2 * Q + 5
  x_BxLxD, z, variables = setup_msr(length)
  forward = jax.jit(lambda x: msr().apply(variables, x, z)[0])
  grad_of_output = jax.jit(jax.grad(lambda x, t: forward(x)[:, t].sum()))
  y_BxLxD = forward(x_BxLxD)
  for t in (0, Q - 1, Q, Q + 1, length - 2):
    g_BxLxD = grad_of_output(x_BxLxD, t)
    assert bool(jnp.all(g_BxLxD[:, t + 1:] == 0)), f"output {t} depends on later inputs"
    assert bool(jnp.any(g_BxLxD[:, :t + 1] != 0))
    flipped = x_BxLxD.at[:, t + 1:].multiply(-1.0)
    assert bool(jnp.all(forward(flipped)[:, :t + 1] == y_BxLxD[:, :t + 1]))


def test_decays_rotary_and_widths_follow_genesys():
  np.testing.assert_allclose(jnp.exp(retnet_core.head_log_decays(8)), 1 - 2.0 ** (-5 - np.arange(8)), rtol=1e-6)
  x = jax.random.normal(jax.random.key(0), (1, 3, 1, 4))
  pos = jnp.arange(3, dtype=jnp.int32)[None, :]
  rot = retnet_core.rotary_interleaved(x, pos)
  theta = pos[0, :, None] * 10000.0 ** (-np.arange(0, 4, 2) / 4)[None, :]
  a, b = x[0, :, 0, 0::2], x[0, :, 0, 1::2]
  np.testing.assert_allclose(rot[0, :, 0, 0::2], a * np.cos(theta) - b * np.sin(theta), atol=1e-6)
  np.testing.assert_allclose(rot[0, :, 0, 1::2], b * np.cos(theta) + a * np.sin(theta), atol=1e-6)
  assert retnet.mlp_width(768, 2, 256) == 1024 and retnet.mlp_width(64, 2, 256) == 256


def test_seed_passes_every_check():
  report = checker.check(retnet.seed())
  assert report.passed, report.to_json()
  assert {c.status for c in report.checks} == {"pass"}


def test_tiny_lm_loss_decreases(tiny_lm_losses):
  losses = tiny_lm_losses(retnet.seed(), d_model=64, length=32)
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5, losses
