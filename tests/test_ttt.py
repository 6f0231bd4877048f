"""TTT-Linear: the dual form against the step-by-step recurrence, causality, the seed block."""

import gab.units.ttt  # noqa: F401  (registers TTTLinear)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gab import checker
from gab.model import GAB, initial_z
from gab.tree import Unit
from gab.units import ttt, ttt_core

Q = 16


def _random_core_inputs(key, b, t, h, f, mb):
  """Every input and parameter random, including those initialised at zero (b, tau offset, beta)."""
  ks = jax.random.split(key, 11)
  normal = lambda k, shape, scale=1.0: scale * jax.random.normal(k, shape)  # noqa: E731
  q, k, v = (normal(ks[i], (b, t, h, f)) for i in range(3))
  x = normal(ks[3], (b, t, h * f))
  lr = ttt_core.inner_lr(x, normal(ks[4], (h, h * f), 0.5), normal(ks[5], (h,), 0.5), base_lr=1.0)
  tau = ttt_core.token_scale(normal(ks[6], (mb,), 0.3))
  params = (normal(ks[7], (h, f, f), 0.3), normal(ks[8], (h, f), 0.3),
            1.0 + normal(ks[9], (h, f), 0.3), normal(ks[10], (h, f), 0.3))
  return (q, k, v, lr, tau) + params


@pytest.mark.parametrize("t", [2 * Q, 2 * Q + 5])
def test_chunked_form_matches_reference(t):
  args = _random_core_inputs(jax.random.key(t), b=2, t=t, h=2, f=8, mb=Q)
  fast = ttt_core.ttt_linear_chunked(*args, mini_batch=Q)
  reference = jax.jit(ttt_core.ttt_linear_reference, static_argnames="mini_batch")
  ref = reference(*args, mini_batch=Q)
  assert fast.shape == ref.shape == (2, t, 2, 8)
  rel = float(jnp.abs(fast - ref).max() / jnp.abs(ref).max())
  assert rel <= 1e-4, rel
  # The inner updates are large here, so a wrong update rule could not hide under the tolerance.
  frozen = reference(*args[:3], 0.0 * args[3], *args[4:], mini_batch=Q)
  assert float(jnp.abs(frozen - ref).max()) > 0.1


def _randomize(params, key):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])


@pytest.mark.parametrize("options", [{}, {"qk_conv": True, "output_gate": True, "mini_batch": 8}])
def test_causality_with_random_parameters(options):
  mb = options.get("mini_batch", Q)
  t_len, d = 2 * mb + 5, 64
  gab = GAB(Unit.make("TTTLinear", **options))
  x = jax.random.normal(jax.random.key(1), (2, t_len, d))
  z = initial_z(jnp.zeros((2, t_len), jnp.int32))
  params = _randomize(gab.init(jax.random.key(2), x, z), jax.random.key(3))

  @jax.jit
  def grad_of_output_at(t):
    y, vjp = jax.vjp(lambda xs: gab.apply(params, xs, z)[0], x)
    return jnp.all(jnp.isfinite(y)), vjp(jnp.zeros_like(y).at[:, t].set(1.0))[0]

  for t in (0, mb - 1, mb, mb + 1, t_len - 2):
    finite, grad = grad_of_output_at(t)
    assert bool(finite)
    assert float(jnp.abs(grad[:, t + 1:]).max()) == 0.0, t
    assert float(jnp.abs(grad[:, t]).max()) > 0.0, t


@pytest.mark.slow  # ~2 min: the full check
def test_seed_passes_the_checker():
  tree = ttt.seed()
  assert tree.render().startswith("Sequence(Residual(Sequence(RMSNorm, CausalConv[kernel_size=4]))")
  report = checker.check(tree)
  assert report.passed, report.to_json()
  assert {c.status for c in report.checks} == {"pass"}


def test_tiny_lm_learns(tiny_lm_losses):
  losses = tiny_lm_losses(ttt.seed(), d_model=64, length=32)
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5, losses
