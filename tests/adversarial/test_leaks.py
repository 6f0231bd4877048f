"""Adversarial designs, one per class of leak the checker must catch, each naming its culprit.

The default run keeps one design per class; the others are `slow` (each is a full check).

Every design is the GPT seed with one unit swapped or added (so the checks before the one that must
fail pass); the units are in `leaky_units`, registered for this module only.
"""

import pytest

from gab import checker, seeds
from gab.checks.context import Context
from gab.checks.structure import check_format, check_forward, check_init
from gab.tree import Unit

U = Unit.make


pytestmark = pytest.mark.usefixtures("leaky_kinds")


def gpt_with_mixer(kind: str) -> Unit:
  return seeds.seed("gpt").replace((0, 0, 1), U(kind))


def assert_fails(report, name: str, *fragments: str):
  """`name` is the one failed check, every check before it passed, the message has `fragments`."""
  statuses = [(c.name, c.status) for c in report.checks]
  assert [c.name for c in report.failed()] == [name], report.to_json()
  assert all(s == "pass" for _, s in statuses[:-1]), statuses
  failed = report.failed()[0]
  for fragment in fragments:
    assert fragment in failed.message, failed.message
  assert failed.hint


CULPRIT = "{} at [0, 0, 1] (block 0)"


@pytest.mark.parametrize("kind, fragments", [
    # beyond the probe's length: > 32 ahead, chunks of 48, causal only while L <= 32
    pytest.param("LookAhead40", ["length 131"], marks=pytest.mark.slow),
    ("NextChunk", ["length 131"]),
    pytest.param("CausalWhileShort", ["length 37"], marks=pytest.mark.slow),
    # shaped for the probe: causal only at [L + 1, L]
    ("ProbeShaped", ["depend on the tokens after"]),
    # across the batch: statistics over batch and time; the batch mean at the same position
    pytest.param("BatchTimeNorm", ["depend on the tokens after"], marks=pytest.mark.slow),
    ("BatchMeanNow", ["other sequences of the batch depend on sequence"]),
    # dormant at initialisation: a zero-initialised gate
    ("ZeroGateLeak", ["perturbed parameters"]),
    # below any tolerance: 1e-8 x the next token's features
    ("TinyLeak", ["a nonzero derivative"]),
    # through a function with zero derivative: the replacement test
    pytest.param("StopGradLeak", ["changed when only the tokens after"], marks=pytest.mark.slow),
])
def test_leaks_fail_causality_and_name_the_unit(kind, fragments):
  assert_fails(checker.check(gpt_with_mixer(kind)), "causality", CULPRIT.format(kind), *fragments)


@pytest.mark.slow
def test_dependence_on_the_distance_to_the_end_fails_prefix_consistency():
  assert_fails(checker.check(gpt_with_mixer("DistanceToEnd")), "causality",
               "the outputs of the first 64 tokens change when the sequence goes on to 128 tokens")


# Leaks the design's own gradients hide, and paths taken only under training conditions: the
# forward tests on the trained program kind find them (the structural tests pass every one).
@pytest.mark.parametrize("kind, fragments", [
    # a custom_vjp kernel: leaky forward, causal backward
    ("CustomVJPLeak", ["forward, length 128, batch 2, float32, at the initial parameters"]),
    # a stop_gradient memory off by one only beyond position 48
    ("SegmentMemory", ["positions <= 48 changed when only the tokens after 48 did"]),
    # a fast path taken only when the length divides by 64
    pytest.param("FastPath64", ["forward, length 128"], marks=pytest.mark.slow),
    # a look-ahead gated by a scalar's magnitude
    pytest.param("MagnitudeGate", ["at vectors and scalars at about 10 times their sign"],
                 marks=pytest.mark.slow),
])
def test_leaks_gradients_do_not_see_fail_the_forward_tests(kind, fragments):
  assert_fails(checker.check(gpt_with_mixer(kind)), "causality", CULPRIT.format(kind), *fragments)


def test_leak_split_across_two_units_through_z_names_writer_and_reader():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [U("Residual", [U("PeekWriter")]), gpt.children[0],
                        U("Residual", [U("PeekReader")]), gpt.children[1]])
  assert_fails(checker.check(tree), "causality", "the leak starts in PeekWriter at [0, 0] (block 0), "
               "in the Z['peek'] it writes; read by PeekReader at [2, 0] (block 0)")


@pytest.mark.slow
def test_leak_only_on_the_bfloat16_path_fails_when_the_run_trains_in_bfloat16():
  cfg = checker.default_config()
  cfg.dtype = "bfloat16"
  assert_fails(checker.check(gpt_with_mixer("Bf16PathLeak"), cfg), "causality",
               CULPRIT.format("Bf16PathLeak"), "bfloat16, at the initial parameters")
  assert checker.check(gpt_with_mixer("Bf16PathLeak")).passed  # a float32 run never takes it


@pytest.mark.slow
def test_leak_that_fires_only_for_large_activations_fails_causality():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [U("Residual", [U("LargeActivationLeak")]), *gpt.children])
  assert_fails(checker.check(tree), "causality", "LargeActivationLeak at [0, 0] (block 0)",
               "embeddings x100")


def test_time_major_z_entry_that_leaks_fails_causality_naming_its_writer():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [*gpt.children, U("Residual", [U("TimeMajorWriter")])])
  assert_fails(checker.check(tree), "causality", "TimeMajorWriter at [2, 0] (block 0)",
               "in the Z['tm'] it writes")


@pytest.mark.slow
def test_time_major_z_read_by_a_later_block_names_writer_and_reader():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [U("Residual", [U("TimeMajorWriter")]), gpt.children[0],
                        U("Residual", [U("TimeMajorReader")]), gpt.children[1]])
  assert_fails(checker.check(tree), "causality", "TimeMajorWriter at [0, 0] (block 0)",
               "Z['tm']", "read by TimeMajorReader at [2, 0] (block 1)")


def test_z_written_in_place_fails_forward_naming_the_writer():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [U("Residual", [U("InPlaceWriter")]), *gpt.children,
                        U("Residual", [U("ItemsReader")])])
  assert_fails(checker.check(tree), "forward", "InPlaceWriter at [0, 0]",
               "mutates the Z it was given in place (entries ['hidden'])")


@pytest.mark.slow
def test_z_read_by_iterating_items_fails_forward_naming_the_reader():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [U("Residual", [U("HonestWriter")]), *gpt.children,
                        U("Residual", [U("ItemsReader")])])
  assert_fails(checker.check(tree), "forward", "ItemsReader at [3, 0] (block 0) reads Z entries "
               "among ['memo'] its kind does not declare")


def test_block_that_ignores_its_input_fails_forward():
  assert_fails(checker.check(U("PositionBias")), "forward", "the logits do not depend on the tokens",
               "PositionBias at [] (block 0)")


@pytest.mark.slow
def test_mixer_that_does_not_mix_fails_forward():
  assert_fails(checker.check(gpt_with_mixer("PositionwiseMixer")), "forward",
               CULPRIT.format("PositionwiseMixer"), "does not mix positions")


def test_design_that_hangs_is_stopped_by_the_timeout_and_fails_the_check():
  cfg = checker.default_config()
  cfg.timeout_s = 5.0
  report = checker.check(gpt_with_mixer("Hang"), cfg)
  assert_fails(report, "init", "did not finish within its timeout of 5 s")


def pre_norm_residual(kind: str) -> Unit:
  return U("Residual", [U("Sequence", [U("RMSNorm"), U(kind)])])


@pytest.mark.slow
def test_cost_hidden_in_a_while_loop_fails_efficiency_naming_the_unit():
  gpt = seeds.seed("gpt")
  tree = U("Sequence", [*gpt.children, pre_norm_residual("WhileLoopMatmuls")])
  report = checker.check(tree)
  assert_fails(report, "efficiency", "step time", "WhileLoopMatmuls at [2, 0, 1] does")


@pytest.mark.slow
def test_long_causal_depthwise_conv_is_not_rejected_for_cost():
  report = checker.check(gpt_with_mixer("LongDepthwiseConv"))
  assert report.passed, report.summary()
  assert report.sizing["flops_vs_gpt"] < 1.5


def test_unit_that_is_nan_only_in_bfloat16_fails_forward_in_the_compute_dtype():
  cfg = checker.default_config()
  cfg.dtype = "bfloat16"
  tree = seeds.seed("gpt").replace((1, 0, 1), U("Bf16Variance"))
  ctx = Context(tree, checker.default_config(), checker.resolve_rung(None, checker.default_config()))
  assert [fn(ctx).status for fn in (check_format, check_init, check_forward)] == ["pass"] * 3
  assert_fails(checker.check(tree, cfg), "forward", "forward pass in bfloat16",
               "Bf16Variance at [1, 0, 1] (block 0)")


def test_memory_is_estimated_before_the_step_runs_at_the_rung_length():
  rung = checker.default_config().rung
  rung.memory_limit_gb = 0.0005
  report = checker.check(seeds.seed("gpt"), rung=rung)
  assert_fails(report, "stability", "would need", "over the rung's memory_limit_gb=0.0005", "not run")
