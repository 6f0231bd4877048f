"""The unit library: every registered kind compiles, checks and trains inside a GPT-like tree.

The kind list is read from the registry at collection time, so kinds added later are tested too.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gab.units  # noqa: F401  (registers the built-in kinds)
from gab import checker, registry, seeds
from gab.model import GAB, compile as compile_block, initial_z
from gab.tree import Unit
from gab.units import attention_variants, layernorm, linear_attention, mlp_variants  # noqa: F401

U = Unit.make
KINDS = list(registry.kinds())
LEAF_KINDS = [name for name, spec in registry.kinds().items() if spec.is_leaf]

# Where a leaf of each role goes in the GPT seed, and what fills a combinator's child slots.
ROLE_PATH = {registry.MIXER: (0, 0, 1), registry.CHANNEL: (1, 0, 1), registry.NORM: (0, 0, 0),
             registry.BLOCK: (0, 0, 1)}
FILLERS = {registry.MIXER: (U("Attention", n_heads=4), U("CausalConv", kernel_size=3)),
           registry.CHANNEL: (U("GatedMLP"), U("GatedMLP", activation="gelu")),
           registry.NORM: (U("RMSNorm"),) * 2,
           registry.BLOCK: (U("Residual", [U("CausalConv")]),) * 2}


def example_unit(kind: str) -> Unit:
  """The kind with default hyperparameters and, for combinators, the fewest children that fit."""
  spec = registry.get(kind)
  children = []
  for slot in spec.slots:
    role = registry.MIXER if registry.MIXER in slot.roles else slot.roles[0]
    for _ in range(slot.min_count):
      children.append(FILLERS[role][len(children) % len(FILLERS[role])])
  return U(kind, children)


def gpt_with(kind: str) -> Unit:
  """The GPT seed with the kind's example in the place its role takes."""
  tree = seeds.seed("gpt").replace(ROLE_PATH[registry.get(kind).role], example_unit(kind))
  return registry.normalize(tree)


def check_config():
  """The checker at the scale this file promises; its effectiveness check is the training run."""
  cfg = checker.default_config()
  cfg.update(dict(d_model=64, n_blocks=2, vocab_size=259, train_steps=10))
  return cfg


@functools.cache
def checked(tree: Unit) -> checker.Report:
  """Cached: the kinds the seed already uses (Attention, GatedMLP, RMSNorm) all give the seed."""
  return checker.check(tree, check_config())


# The full checker costs ~15-25 s per kind on 2 cores: the default run checks one kind per role
# and combinator family; every other kind runs with `-m slow`.
DEFAULT_KINDS = ("Attention", "CausalConv", "GatedMLP", "LayerNorm", "Gate")


@pytest.mark.parametrize("kind", [k if k in DEFAULT_KINDS else pytest.param(k, marks=pytest.mark.slow)
                                  for k in KINDS])
def test_kind_checks_and_trains_in_gpt_tree(kind):
  """Compiles, passes every check (causality included), and 10 AdamW steps lower the loss."""
  tree = gpt_with(kind)
  compile_block(tree)
  report = checked(tree)
  assert report.passed, report.summary()
  passed = {c.name for c in report.checks if c.status == checker.PASS}
  assert {"causality", "effectiveness"} <= passed, report.to_json()


def hparam_settings(spec: registry.KindSpec, max_product: int = 48):
  """Every combination of the domains, or each value with the others at default if too many."""
  names = [p.name for p in spec.params]
  combos = list(itertools.product(*(p.domain for p in spec.params)))
  if len(combos) <= max_product:
    return [dict(zip(names, c)) for c in combos]
  return [{p.name: v} for p in spec.params for v in p.domain]


@pytest.mark.parametrize("kind", LEAF_KINDS)
def test_every_hyperparameter_setting_fits_widths_that_are_multiples_of_32(kind):
  for params, d_model in itertools.product(hparam_settings(registry.get(kind)), (32, 96, 160)):
    block = GAB(U(kind, **params))
    x_BxLxD = jax.ShapeDtypeStruct((1, 8, d_model), jnp.float32)
    y, _ = jax.eval_shape(lambda x, b=block: b.init_with_output(
        jax.random.key(0), x, initial_z(jnp.zeros(x.shape[:2], jnp.int32)))[0], x_BxLxD)
    assert y.shape == (1, 8, d_model), (params, d_model)


@pytest.mark.parametrize("length,chunk", [(64, 16), (37, 16), (5, 16)])
@pytest.mark.parametrize("feature_map", ["elu1", "identity"])
def test_chunked_linear_attention_matches_recurrence(length, chunk, feature_map):
  phi = linear_attention.FEATURE_MAPS[feature_map]
  rng = np.random.default_rng(length)
  q_BxLxHxK, k_BxLxHxK = (phi(jnp.asarray(rng.standard_normal((2, length, 3, 8)), jnp.float32))
                          for _ in range(2))
  v_BxLxHxV = jnp.asarray(rng.standard_normal((2, length, 3, 6)), jnp.float32)
  fast = jax.jit(linear_attention.chunked_linear_attention, static_argnums=3)(
      q_BxLxHxK, k_BxLxHxK, v_BxLxHxV, chunk)
  ref = jax.jit(linear_attention.linear_attention_recurrence)(q_BxLxHxK, k_BxLxHxK, v_BxLxHxV)
  assert fast.shape == ref.shape == (2, length, 3, 6) and fast.dtype == jnp.float32
  assert float(jnp.abs(fast - ref).max() / jnp.abs(ref).max()) <= 1e-4


@pytest.mark.parametrize("window", [16, 32])
def test_sliding_window_sees_exactly_the_last_window_positions(window):
  length, d_model = 64, 64
  block = GAB(U("SlidingWindowAttention", n_heads=4, window=window))
  rng = np.random.default_rng(window)
  x_LxD = jnp.asarray(rng.standard_normal((length, d_model)), jnp.float32)
  z = initial_z(jnp.zeros((1, length), jnp.int32))
  params = block.init(jax.random.key(2), x_LxD[None], z)
  cot_D = jnp.asarray(rng.standard_normal(d_model), jnp.float32)

  @jax.jit
  def input_grads_of_each_output(x_LxD):
    _, vjp = jax.vjp(lambda x: block.apply(params, x[None], z)[0][0], x_LxD)
    return jax.vmap(lambda t: vjp(jnp.zeros((length, d_model)).at[t].set(cot_D))[0])(jnp.arange(length))

  grads_TxLxD = input_grads_of_each_output(x_LxD)
  depends_TxL = np.asarray(jnp.any(grads_TxLxD != 0, axis=-1))
  t, s = np.arange(length)[:, None], np.arange(length)[None, :]
  np.testing.assert_array_equal(depends_TxL, (s <= t) & (s > t - window))
