"""Controls: legitimate designs the hardened checker must still accept.

The default run keeps one cheap representative of each sweep; the full sweeps (every seed's
causality on 5 keys in float32 and bfloat16, every registered kind, 20 random scratch designs) are
`slow`.
"""

import os

import jax
import leaky_units
import pytest

from evolution import growth
from gab import checker, registry, seeds
from gab.checks.causality import check_causality
from gab.checks.context import Context
from gab.checks.structure import check_format, check_forward, check_init
from gab.registry import CHANNEL, MIXER, NORM, KindSpec, Param
from gab.tree import Unit
from gab.units.attention_variants import SlidingWindowAttention

U = Unit.make


pytestmark = pytest.mark.usefixtures("leaky_kinds")


def causality_verdict(tree: Unit, seed: int, dtype: str):
  cfg = checker.default_config()
  cfg.seed, cfg.dtype = seed, dtype
  ctx = Context(tree, cfg, checker.resolve_rung(None, cfg))
  for fn in (check_format, check_init, check_forward):
    c = fn(ctx)
    assert c.status == "pass", c.message
  return check_causality(ctx)


@pytest.mark.slow  # ~1.5 min: the default key is covered by the GPT checker tests
def test_gpt_causality_in_float32_and_bfloat16_on_another_key():
  c = causality_verdict(seeds.seed("gpt"), 3, "bfloat16")
  assert c.status == "pass", c.message
  assert "in float32 and bfloat16" in c.message


def test_fft_long_convolution_passes_causality_in_float32_and_bfloat16():
  """An FFT's rounding reaches every position (~1e-7 relative in float32): a tolerance of its
  compute dtype's epsilon, not a leak."""
  c = causality_verdict(in_gpt(U("FFTConv")), 0, "bfloat16")
  assert c.status == "pass", c.message


@pytest.mark.slow
@pytest.mark.parametrize("seed", list(seeds.SEEDS))
def test_every_seed_causality_float32_and_bfloat16_on_five_keys(seed):
  for key in range(5):
    c = causality_verdict(seeds.seed(seed), key, "bfloat16")
    assert c.status == "pass", (seed, key, c.message)


def in_gpt(unit: Unit) -> Unit:
  """The GPT seed with `unit` in the slot of its role."""
  role = registry.get(unit.kind).role
  path = {MIXER: (0, 0, 1), CHANNEL: (1, 0, 1), NORM: (0, 0, 0)}[role]
  return seeds.seed("gpt").replace(path, unit)


@pytest.mark.slow
def test_sliding_window_longer_than_the_probe_passes():
  report = checker.check(in_gpt(U("SlidingWindowAttention", window=64)))
  assert report.passed, report.summary()


@pytest.mark.slow
@pytest.mark.parametrize("unit", [
    U("MultiScaleRetention", chunk_size=128),           # chunks longer than both probe lengths' halves
    U("RWKV6TimeMix", chunk_size=64),
    U("SlidingWindowAttention", window=128),
    U("LongDepthwiseConv"),                             # kernel 160 > the rung's context 128
], ids=lambda u: u.render())
def test_chunked_windowed_and_long_kernel_units_pass(unit):
  report = checker.check(in_gpt(unit))
  assert report.passed, report.summary()


BUILT_IN = sorted(n for n, s in registry.kinds().items()
                  if s.role != registry.BLOCK and n not in {k.name for k in leaky_units.KINDS})


@pytest.mark.slow
@pytest.mark.parametrize("kind", BUILT_IN)
def test_every_registered_kind_passes_in_the_gpt_seed(kind):
  report = checker.check(in_gpt(U(kind)))
  assert report.passed, report.summary()


# Random scratch designs may be genuinely broken; these are the checks that may reject one, and why.
ALLOWED_FAILURES = {
    "init": "hyperparameters that do not fit the check scale's width (heads not dividing d_model)",
    "forward": "an output that ignores its input (e.g. a Gate of a zero branch) or a mixer whose "
               "mixing is cut (e.g. behind an identically-zero gate)",
    "differentiability": "a parameter whose gradient is zero (a branch multiplied by zero)",
    "effectiveness": "a block whose loss does not fall in 10 steps",
    "parameter_budget": "a block too large or small for the rung at any width",
    "efficiency": "a block far more expensive than a transformer block",
}


def scratch_designs(n):
  """`n` scratch designs grown from the built-in kinds only (this module's leaky kinds are
  registered for the other tests, and growth draws from every registered kind)."""
  key = jax.random.key(2024)
  leaky_units.unregister()
  try:
    return [growth.scratch(jax.random.fold_in(key, i))[0] for i in range(n)]
  finally:
    leaky_units.register()


def check_scratch(tree):
  report = checker.check(tree)
  for c in report.failed():
    assert c.name in ALLOWED_FAILURES, (tree.render(), c.name, c.message)
    assert "crashed" not in c.message, (tree.render(), c.message)
  return report


def test_a_random_scratch_design_is_checked_without_a_false_leak():
  """The smallest of the first three (the first alone, 9 units with RWKV6 and linear attention,
  took 80 s of the default run); all twenty are checked in the slow test below."""
  check_scratch(min(scratch_designs(3), key=lambda t: t.size()))


@pytest.mark.slow
def test_twenty_random_scratch_designs():
  reports = [check_scratch(t) for t in scratch_designs(20)]
  assert sum(r.passed for r in reports) >= 10, [r.summary() for r in reports]


@pytest.mark.slow  # ~2 min: a 17-unit design at the discovery config's first rung
def test_scratch_design_with_rounding_across_the_batch_passes_causality():
  """A random scratch design of the discovery experiment (random arm, seed 0, proposal 9) whose
  combined structural pull-back gave 2e-10 across the batch while every per-array pull-back (the
  logits' among them) was exactly zero: rounding where paths cancel, not a leak."""
  import copy  # pylint: disable=g-import-not-at-top
  from configs import ladder  # pylint: disable=g-import-not-at-top
  from gab.tree import load_design_file  # pylint: disable=g-import-not-at-top
  config = ladder.get_config("discovery")
  cfg = copy.deepcopy(config.checker)
  cfg.vocab_size = 259
  rung = copy.deepcopy(config.rungs[config.ladder.rungs[0]])
  rung.seq_len = config.data.seq_len
  tree, _, _ = load_design_file(os.path.join(os.path.dirname(__file__),
                                             "scratch_rounding_across_batch.json"))
  report = checker.check(tree, cfg, rung)
  assert report.passed, report.to_json()


def long_probe(tree: Unit, seq_len: int) -> int:
  cfg = checker.default_config()
  rung = dict(cfg.rung.to_dict(), seq_len=seq_len)
  ctx = Context(tree, cfg, checker.resolve_rung(rung, cfg))
  assert [fn(ctx).status for fn in (check_format, check_init)] == ["pass", "pass"]
  return ctx.plan.long  # the init check made the plan


def test_a_window_as_long_as_the_context_is_probed_as_far_as_attention():
  """Causality's long probe goes twice as far as a window shorter than the context (to see past
  its end), but only just past the context for one that reaches it, as for the GPT seed's
  attention: twice the context cost four times the attention, and timed out on long contexts."""
  attention = long_probe(seeds.seed("gpt"), 100)
  assert attention == 101
  assert long_probe(in_gpt(U("SlidingWindowAttention", window=128)), 100) == attention
  assert long_probe(in_gpt(U("SlidingWindowAttention", window=64)), 100) > 2 * 64


class ContextWindow(SlidingWindowAttention):
  """Sliding-window attention whose window is the slow test's whole context (512)."""


@pytest.mark.slow  # ~3 min: the full check at a context of 512
def test_a_window_as_long_as_a_long_context_passes_within_the_timeout():
  registry.register(KindSpec("ContextWindow", MIXER, ContextWindow,
                             params=(Param("n_heads", 4, (4,)), Param("window", 512, (512,))),
                             reads=("positions",)))
  try:
    cfg = checker.default_config()
    rung = dict(d_model=128, n_blocks=2, batch_size=2, seq_len=512, target_params=0)
    report = checker.check(in_gpt(U("ContextWindow")), cfg, rung)
  finally:
    registry._REGISTRY.pop("ContextWindow", None)  # pylint: disable=protected-access
  assert report.passed, report.summary()
