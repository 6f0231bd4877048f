import json
import subprocess
import sys

import flax.linen as nn
import jax
import pytest

from gab import checker, registry, seeds
from gab.registry import MIXER, KindSpec, Param
from gab.tree import Unit, design_to_json
from gab.units.attention import Attention, head_split, rotary
from gab.units.base import UnitModule

U = Unit.make


class UnmaskedAttention(Attention):
  """Attention without its causal mask: the classic leak."""

  @nn.compact
  def __call__(self, x, z):
    b, l, d = x.shape
    h = self.hp("n_heads")
    k = head_split(d, h, self.unit.kind)
    qkv = self.dense(3 * d, "qkv")(x).reshape(b, l, 3, h, k)
    q, kk, v = (rotary(qkv[:, :, 0], z["positions"]), rotary(qkv[:, :, 1], z["positions"]), qkv[:, :, 2])
    y = jax.nn.dot_product_attention(q, kk, v, is_causal=False)
    return self.dense(d, "out", out=True)(y.reshape(b, l, d)), z


class DeadBranch(UnitModule):
  """A unit with a parameter that never reaches the output."""

  @nn.compact
  def __call__(self, x, z):
    self.param("unused", nn.initializers.ones, (3,))
    return x, z


@pytest.fixture(scope="module", autouse=True)
def adversarial_kinds():
  registry.register(KindSpec("UnmaskedAttention", MIXER, UnmaskedAttention, params=(Param("n_heads", 4, (4,)),)))
  registry.register(KindSpec("DeadBranch", MIXER, DeadBranch))
  yield
  for name in ("UnmaskedAttention", "DeadBranch"):
    registry._REGISTRY.pop(name)


def gpt_with_mixer(mixer: Unit) -> Unit:
  return seeds.seed("gpt").replace((0, 0, 1), mixer)


def test_gpt_seed_passes_every_check():
  report = checker.check(seeds.seed("gpt"))
  assert report.passed, report.to_json()
  assert [c.name for c in report.checks] == ["format", "init", "forward", "causality", "gradient"]
  assert {c.status for c in report.checks} == {"pass"}


def test_attention_without_mask_fails_causality_and_names_the_unit():
  report = checker.check(gpt_with_mixer(U("UnmaskedAttention", n_heads=4)))
  assert not report.passed
  (failed,) = report.failed()
  assert failed.name == "causality"
  assert "UnmaskedAttention at [0, 0, 1]" in failed.message
  assert failed.hint


def test_causal_conv_passes_and_unused_parameter_fails_gradient():
  assert checker.check(gpt_with_mixer(U("CausalConv", kernel_size=3))).passed
  report = checker.check(gpt_with_mixer(U("DeadBranch")))
  (failed,) = report.failed()
  assert failed.name == "gradient" and "unused" in failed.message


def test_unknown_kind_fails_format():
  report = checker.check(U("Residual", [U("Nope")]))
  assert [c.name for c in report.checks] == ["format"]
  assert "unknown unit kind 'Nope'" in report.checks[0].message


def test_heads_not_dividing_d_model_fail_init():
  cfg = checker.default_config()
  cfg.d_model = 36
  report = checker.check(gpt_with_mixer(U("Attention", n_heads=8)), cfg)
  assert report.failed()[0].name == "init"
  assert "must split into 8 heads" in report.failed()[0].message


def test_cli_exit_codes(tmp_path):
  good = tmp_path / "gpt.json"
  good.write_text(design_to_json(seeds.seed("gpt"), "gpt"))
  bad = tmp_path / "bad.json"
  bad.write_text(design_to_json(U("Residual", [U("Nope")])))
  broken = tmp_path / "broken.json"
  broken.write_text("{")

  def cli(path):
    return subprocess.run([sys.executable, "-m", "gab.checker", f"--design={path}"], capture_output=True, text=True)

  ok = cli(good)
  assert ok.returncode == 0, ok.stderr
  out = json.loads(ok.stdout)
  assert out["passed"] is True and {c["status"] for c in out["checks"]} == {"pass"}
  assert set(out["checks"][0]) >= {"name", "status", "message"}
  failed = cli(bad)
  assert failed.returncode == 1 and json.loads(failed.stdout)["passed"] is False
  unusable = cli(broken)
  assert unusable.returncode == 2 and "not valid JSON" in unusable.stderr
  assert len(unusable.stderr.strip().splitlines()[-1]) < 300
