"""Adversarial designs: each breaks one rule, and must fail exactly that check, naming the unit.

The kinds below are registered for this module only. Every case is the GPT seed with one unit
swapped or added, so all the checks before the named one pass.
"""

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from gab import checker, registry, seeds, sizing
from gab.registry import CHANNEL, MIXER, KindSpec, Param
from gab.tree import Unit
from gab.units.attention import Attention, head_split, rotary
from gab.units.base import UnitModule

U = Unit.make
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reverse_cumsum(x_BxLxD):
  return jnp.flip(jnp.cumsum(jnp.flip(x_BxLxD.astype(jnp.float32), 1), 1), 1)


class UnmaskedAttention(Attention):
  """Attention without its causal mask."""

  @nn.compact
  def __call__(self, x, z):
    b, l, d = x.shape
    h = self.hp("n_heads")
    k = head_split(d, h, self.unit.kind)
    qkv = self.dense(3 * d, "qkv")(x).reshape(b, l, 3, h, k)
    q, kk, v = rotary(qkv[:, :, 0], z["positions"]), rotary(qkv[:, :, 1], z["positions"]), qkv[:, :, 2]
    y = jax.nn.dot_product_attention(q, kk, v, is_causal=False)
    return self.dense(d, "out", out=True)(y.reshape(b, l, d)), z


class TwoSidedConv(UnitModule):
  """A depthwise convolution padded on both sides: y_t sees x_{t+1}."""

  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    conv = nn.Conv(d, kernel_size=(3,), feature_group_count=d, padding=[(1, 1)], name="conv")
    return conv(x), z


class ReverseCumsum(UnitModule):
  """A running sum taken backwards in time: y_t sums x_t..x_L."""

  @nn.compact
  def __call__(self, x, z):
    v = self.dense(x.shape[-1], "value")(x)
    y = (reverse_cumsum(v) / x.shape[1]).astype(x.dtype)
    return self.dense(x.shape[-1], "out", out=True)(y), z


class FutureSummary(UnitModule):
  """In the first block, writes Z['future'] = a backwards running mean of its input (a leak)."""

  @nn.compact
  def __call__(self, x, z):
    if self.layer == 0:
      z = {**z, "future": (reverse_cumsum(x) / x.shape[1]).astype(x.dtype)}
    return jnp.zeros_like(x), z


class FutureReader(UnitModule):
  """In later blocks, projects the Z['future'] an earlier block wrote; in the first, its input."""

  @nn.compact
  def __call__(self, x, z):
    source = z["future"] if self.layer > 0 else x
    return self.dense(x.shape[-1], "proj", out=True)(source), z


class OverflowAverage(UnitModule):
  """A causal average weighted by exp(position): exp overflows float32 beyond position 88."""

  @nn.compact
  def __call__(self, x, z):
    v = self.dense(x.shape[-1], "value")(x).astype(jnp.float32)
    w_BxLx1 = jnp.exp(z["positions"].astype(jnp.float32))[..., None]
    y = jnp.cumsum(w_BxLx1 * v, axis=1) / jnp.cumsum(w_BxLx1, axis=1)
    return self.dense(x.shape[-1], "out", out=True)(y.astype(x.dtype)), z


class DeadParameter(UnitModule):
  """A parameter that never reaches the output."""

  @nn.compact
  def __call__(self, x, z):
    self.param("unused", nn.initializers.ones, (3,))
    return self.dense(x.shape[-1], "proj", out=True)(x), z


class WideOutput(UnitModule):
  """Returns 2 x d_model features."""

  @nn.compact
  def __call__(self, x, z):
    return self.dense(2 * x.shape[-1], "proj")(x), z


class RedundantMatmuls(UnitModule):
  """Multiplies by the same d x d matrix 32 times: d^2 parameters, 32 d^2 multiply-adds a token."""

  @nn.compact
  def __call__(self, x, z):
    dense = nn.Dense(x.shape[-1], use_bias=False, kernel_init=nn.initializers.orthogonal(), name="w")
    y = x
    for _ in range(32):
      y = dense(y)
    return y, z


KINDS = [
    KindSpec("UnmaskedAttention", MIXER, UnmaskedAttention, params=(Param("n_heads", 4, (4,)),),
             reads=("positions",)),
    KindSpec("TwoSidedConv", MIXER, TwoSidedConv),
    KindSpec("ReverseCumsum", MIXER, ReverseCumsum),
    KindSpec("FutureSummary", MIXER, FutureSummary, writes=("future",)),
    KindSpec("FutureReader", MIXER, FutureReader, reads=("future",)),
    KindSpec("OverflowAverage", MIXER, OverflowAverage, reads=("positions",)),
    KindSpec("DeadParameter", CHANNEL, DeadParameter),  # position-wise: not a sequence mixer
    KindSpec("WideOutput", CHANNEL, WideOutput),
    KindSpec("RedundantMatmuls", CHANNEL, RedundantMatmuls),
]


@pytest.fixture(scope="module", autouse=True)
def adversarial_kinds():
  for spec in KINDS:
    registry.register(spec)
  yield
  for spec in KINDS:
    registry._REGISTRY.pop(spec.name)


def gpt_with_mixer(kind: str, **params) -> Unit:
  return seeds.seed("gpt").replace((0, 0, 1), U(kind, **params))


def pre_norm_residual(kind: str) -> Unit:
  return U("Residual", [U("Sequence", [U("RMSNorm"), U(kind)])])


def assert_fails_only(report, name: str, *fragments: str):
  """`name` is the one failed check, every check before it passed, and the message names the unit."""
  statuses = [(c.name, c.status) for c in report.checks]
  assert [c.name for c in report.failed()] == [name], report.to_json()
  before = statuses[:[n for n, _ in statuses].index(name)]
  assert all(status == "pass" for _, status in before), statuses
  failed = report.failed()[0]
  for fragment in fragments:
    assert fragment in failed.message, failed.message
  assert failed.hint


# tests/adversarial/ holds a design per class of leak in the default run; these two are `slow`.
@pytest.mark.parametrize("kind, where", [
    ("UnmaskedAttention", "UnmaskedAttention at [0, 0, 1] (block 0)"),
    pytest.param("TwoSidedConv", "TwoSidedConv at [0, 0, 1] (block 0)", marks=pytest.mark.slow),
    pytest.param("ReverseCumsum", "ReverseCumsum at [0, 0, 1] (block 0)", marks=pytest.mark.slow),
])
def test_leaky_mixers_fail_causality(kind, where):
  assert_fails_only(checker.check(gpt_with_mixer(kind)), "causality", where)


@pytest.mark.slow  # the default run has tests/adversarial's time-major Z leak
def test_future_read_through_z_from_an_earlier_block_fails_causality():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [pre_norm_residual("FutureSummary"), gpt.children[0],
                        pre_norm_residual("FutureReader"), gpt.children[1]])
  report = checker.check(tree)
  assert_fails_only(report, "causality", "FutureSummary at [0, 0, 1] (block 0)", "Z['future']",
                    "read by FutureReader at [2, 0, 1] (block 1)")


def test_nan_only_at_full_context_length_fails_stability():
  report = checker.check(gpt_with_mixer("OverflowAverage"))
  assert_fails_only(report, "stability", "at the full context length 128",
                    "OverflowAverage at [0, 0, 1] (block 0)", "first at position 89")


def test_parameter_without_gradient_fails_differentiability():
  report = checker.check(gpt_with_mixer("DeadParameter"))
  assert_fails_only(report, "differentiability",
                    "DeadParameter at [0, 0, 1] (blocks 0, 1), parameter unused", "identically zero")


def test_output_of_the_wrong_shape_fails_forward():
  tree = seeds.seed("gpt").replace((1, 0, 1), U("WideOutput"))
  report = checker.check(tree)
  assert_fails_only(report, "forward",
                    "WideOutput at [1, 0, 1] (blocks 0, 1) returned shape (2, 32, 128)")


def test_redundant_matmuls_fail_efficiency():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [*gpt.children, pre_norm_residual("RedundantMatmuls")])
  report = checker.check(tree)
  assert_fails_only(report, "efficiency", "the GPT seed's FLOPs", "RedundantMatmuls at [2, 0, 1] does")
  assert report.sizing["flops_vs_gpt"] > 3


@pytest.mark.slow  # the default run has tests/adversarial's memory estimated before the step runs
def test_design_over_the_rung_memory_fails_efficiency():
  rung = ml_collections.ConfigDict(checker.default_config().rung.to_dict())
  rung.memory_limit_gb = 0.02  # over the check-scale step's ~9 MB (stability), under the rung's
  report = checker.check(seeds.seed("gpt"), rung=rung)
  assert_fails_only(report, "efficiency", "over the rung's memory_limit_gb=0.02",
                    "Attention at [0, 0, 1] produces")


def ladder_config():
  spec = importlib.util.spec_from_file_location("ladder", os.path.join(ROOT, "configs", "ladder.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def ladder_rung(config, name):
  rung = ml_collections.ConfigDict(config.rungs[name].to_dict())
  rung.seq_len = config.data.seq_len
  return rung


@pytest.mark.slow  # a full check at each of three rungs (~1 min)
def test_gpt_seed_passes_every_check_at_every_rung_of_the_ladder():
  config = ladder_config()
  gpt = seeds.seed("gpt")
  for name in config.ladder.rungs:
    rung = ladder_rung(config, name)
    report = checker.check(gpt, config.checker, rung)
    assert report.passed, (name, report.to_json())
    assert {c.status for c in report.checks} == {"pass"}, (name, report.to_json())
    assert len(report.checks) == 9
    assert (report.sizing["d_model"], report.sizing["n_blocks"]) == (rung.d_model, rung.n_blocks)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [s for s in seeds.SEEDS if s != "gpt"])
def test_every_seed_passes_every_check_at_every_rung_of_the_ladder(seed):
  config = ladder_config()
  for name in config.ladder.rungs:
    report = checker.check(seeds.seed(seed), config.checker, ladder_rung(config, name))
    assert report.passed, (seed, name, report.summary())
    assert {c.status for c in report.checks} <= {"pass", "warn"}
