import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gab.units.mamba2  # noqa: F401  (registers Mamba2Layer)
from gab import checker, registry
from gab.model import initial_z
from gab.tree import Unit
from gab.units.mamba2 import Mamba2Layer, seed
from gab.units.mamba2_core import ssd_chunked, ssd_reference

Q = 16
D_MODEL = 64
GENESYS = dict(chunk_size=Q, head_dim=32, d_state=16)
REFERENCE = dict(GENESYS, norm="rmsnorm", d_term=True, bias=False)


def rel_err(fast, ref):
  return float(jnp.abs(fast - ref).max() / jnp.abs(ref).max())


def randomise(params, key, scale=0.3):
  """Random values for every parameter, zero- and one-initialised ones included."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def layer_fns(hparams, length, key=jax.random.key(0)):
  """Chunked and reference forward functions x -> y of one Mamba2 layer with random parameters."""
  unit = registry.normalize(Unit.make("Mamba2Layer", **hparams))
  fast, ref = Mamba2Layer(unit), Mamba2Layer(unit, reference=True)
  x = jax.random.normal(key, (2, length, D_MODEL))
  z = initial_z(jnp.zeros((2, length), jnp.int32))
  params = randomise(jax.jit(fast.init)(key, x, z), jax.random.fold_in(key, 1))
  apply = lambda module, xs: module.apply(params, xs, z)[0]  # noqa: E731
  return jax.jit(functools.partial(apply, fast)), jax.jit(functools.partial(apply, ref)), x


@pytest.mark.parametrize("length", [2 * Q, 2 * Q + 5])
def test_ssd_core_chunked_matches_recurrence_with_groups(length):
  ks = jax.random.split(jax.random.key(1), 6)
  bsz, h, p, g, n = 2, 4, 8, 2, 16
  x = jax.random.normal(ks[0], (bsz, length, h, p))
  dt = jax.nn.softplus(jax.random.normal(ks[1], (bsz, length, h)))
  a = -jnp.exp(jax.random.normal(ks[2], (h,)))
  b, c = jax.random.normal(ks[3], (2, bsz, length, g, n))
  d = jax.random.normal(ks[4], (h,))
  fast = jax.jit(functools.partial(ssd_chunked, chunk_size=Q))(x, dt, a, b, c, d)
  assert fast.shape == x.shape
  assert rel_err(fast, jax.jit(ssd_reference)(x, dt, a, b, c, d)) <= 1e-4


@pytest.mark.parametrize("hparams", [GENESYS, REFERENCE], ids=["genesys", "reference"])
@pytest.mark.parametrize("length", [2 * Q, 2 * Q + 5])
def test_layer_chunked_matches_recurrence(hparams, length):
  fast, ref, x = layer_fns(hparams, length)
  assert rel_err(fast(x), ref(x)) <= 1e-4


def test_layer_is_exactly_causal():
  length = 2 * Q + 5
  fast, _, x = layer_fns(REFERENCE, length)
  y, vjp = jax.vjp(fast, x)
  for t in (0, Q - 1, Q, Q + 1, length - 2):
    (grad_x,) = vjp(jnp.zeros_like(y).at[:, t].set(1.0))
    assert bool(jnp.all(grad_x[:, t + 1:] == 0)), f"output {t} depends on later inputs"
    assert bool(jnp.any(grad_x[:, t] != 0))
    negated = fast(x.at[:, t + 1:].multiply(-1.0))
    np.testing.assert_array_equal(np.asarray(negated[:, :t + 1]), np.asarray(y[:, :t + 1]))


@pytest.mark.slow  # ~2 min: the full check (the seed sweep in tests/adversarial is slow too)
def test_seed_passes_the_checker():
  """At d_model 128, where the seed is within 20% of the GPT seed's parameters.

  At d_model 64 it is 1.33x (d_state 64 is half the inner width there), outside the default rung's
  budget. Its train step needs ~2.7x the GPT seed's memory at these shapes (the state per chunk and
  two layers of inner width 2*d_model per block), which the efficiency check reports as a warning.
  """
  rung = dict(d_model=128, n_blocks=2, target_params=0, batch_size=8, seq_len=128, memory_limit_gb=0.0)
  report = checker.check(seed(), rung=rung)
  assert report.passed, report.to_json()
  statuses = {c.name: c.status for c in report.checks}
  assert statuses.pop("efficiency") in ("pass", "warn")
  assert set(statuses.values()) == {"pass"} and len(statuses) == len(checker.NAMES) - 1


def test_seed_lm_learns(tiny_lm_losses):
  losses = tiny_lm_losses(seed(), d_model=D_MODEL, length=32)
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5, losses
