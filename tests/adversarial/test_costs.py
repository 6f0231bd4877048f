"""True cost: designs whose train step costs more than its FLOP count says fail efficiency, naming
the unit; a design whose expensive code never runs (a cond's repair branch) passes.

Each design is the GPT seed with one unit of `costly_units` added in a pre-norm residual. The
default run checks two of them through the efficiency check alone (after the format, init and
parameter_budget checks it needs) at a small rung; the full checks of all four are `slow` (each
compiles its step twice, once as training compiles it, and times it against the GPT seed's).
"""

import costly_units
import leaky_units
import pytest

from gab import checker, seeds
from gab.checks.budget import check_efficiency, check_parameter_budget
from gab.checks.context import Context
from gab.checks.structure import check_format, check_init
from gab.tree import Unit

U = Unit.make
SMALL = dict(d_model=64, n_blocks=2, batch_size=4, seq_len=64, target_params=0)


@pytest.fixture(scope="module", autouse=True)
def kinds():
  leaky_units.register(costly_units.KINDS)
  yield
  leaky_units.unregister(costly_units.KINDS)


def with_unit(kind: str, **hparams) -> Unit:
  gpt = seeds.seed("gpt")
  return U("Sequence", [*gpt.children, U("Residual", [U("Sequence", [U("RMSNorm"), U(kind, **hparams)])])])


def efficiency(tree: Unit, rung=None):
  """The efficiency check alone, after the checks it builds on (which must pass)."""
  cfg = checker.default_config()
  ctx = Context(tree, cfg, checker.resolve_rung(rung, cfg))
  for fn in (check_format, check_init, check_parameter_budget):
    assert fn(ctx).status == "pass"
  return check_efficiency(ctx), ctx.sizing


def test_constants_baked_into_the_program_count_as_memory():
  check, sizing = efficiency(with_unit("ConstantTable", mebibytes=24), SMALL)  # 25.2 MB; GPT: 7 MB
  assert check.status == "fail", check.message
  assert "25.2 MB of it constants" in check.message and "bytes: warn above" in check.message
  assert "ConstantTable at [2, 0, 1] produces" in check.message
  assert sizing["memory_vs_gpt"] > 4


def test_a_cond_whose_expensive_branch_never_runs_is_priced_by_the_branch_that_runs():
  check, sizing = efficiency(with_unit("NaNGuard"), SMALL)
  # Its repair branch alone counts > 3x the GPT seed's FLOPs; XLA reserves that branch's buffers
  # whichever runs, so its memory may warn (real), but its FLOPs are the cheap branch's.
  assert check.status != "fail" and "flops: warn" not in check.message, check.message
  assert "which branch of the cond runs in NaNGuard at [2, 0, 1]" in check.message
  low, high = check.message.split("which gives ")[1].split(")")[0].split("-")
  assert float(high.rstrip("x")) > 3 > 1.5 > sizing["flops_vs_gpt"] and float(low.rstrip("x")) < 1.5


@pytest.mark.slow
@pytest.mark.parametrize("kind, fragments", [
    # a while_loop whose trip count depends on the data: one step on zeros, hundreds on tokens
    ("FixedPointLayer", ["step time", "the trip count of the while_loop in FixedPointLayer"]),
    # a LAPACK eigendecomposition per token: counted by its own rule, and timed
    ("PerTokenEigh", ["step time", "what eigh costs in PerTokenEigh"]),
    # a 192 MiB constant table
    ("ConstantTable", ["201.3 MB of it constants", "bytes: warn above"]),
])
def test_cost_cheats_fail_efficiency_naming_the_unit(kind, fragments):
  report = checker.check(with_unit(kind))
  statuses = [(c.name, c.status) for c in report.checks]
  assert [c.name for c in report.failed()] == ["efficiency"], report.to_json()
  assert all(s == "pass" for _, s in statuses[:-1]), statuses
  message = report.failed()[0].message
  for fragment in fragments + [f"{kind} at [2, 0, 1] "]:
    assert fragment in message, message


@pytest.mark.slow
def test_cond_guarded_unit_passes_every_check():
  report = checker.check(with_unit("NaNGuard"))
  assert report.passed, report.summary()
  assert report.sizing["flops_vs_gpt"] < 1.5
