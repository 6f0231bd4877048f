import json
import subprocess
import sys

import flax.linen as nn
import jax
import pytest

from gab import checker, registry, seeds
from gab.checks.probe import describe_params, locate
from gab.checks.structure import z_flow_errors
from gab.registry import MIXER, KindSpec
from gab.tree import Unit, design_to_json
from gab.units.base import UnitModule

U = Unit.make


class StateWriter(UnitModule):
  """Writes Z['state'] (position-wise, so causal) and passes x through."""

  @nn.compact
  def __call__(self, x, z):
    return self.dense(x.shape[-1], "proj", out=True)(x), {**z, "state": x}


class StateReader(UnitModule):
  """Adds a projection of Z['state']."""

  @nn.compact
  def __call__(self, x, z):
    return self.dense(x.shape[-1], "proj", out=True)(z["state"]), z


class FirstChildOnly(UnitModule):
  """Declares two children and calls only the first (the second is a unit the design lacks)."""

  @nn.compact
  def __call__(self, x, z):
    return self.child(0)(x, z)


KINDS = [
    KindSpec("FirstChildOnly", MIXER, FirstChildOnly,
             slots=(registry.Slot("mixers", (MIXER,), min_count=2, max_count=2),)),
    KindSpec("StateWriter", MIXER, StateWriter, writes=("state",)),
    KindSpec("StateReader", MIXER, StateReader, reads=("state",)),
    KindSpec("SilentReader", MIXER, StateReader),  # reads Z['state'] without declaring it
]


@pytest.fixture(scope="module", autouse=True)
def test_kinds():
  for spec in KINDS:
    registry.register(spec)
  yield
  for spec in KINDS:
    registry._REGISTRY.pop(spec.name)


def gpt_with_mixer(mixer: Unit) -> Unit:
  return seeds.seed("gpt").replace((0, 0, 1), mixer)


def test_gpt_seed_passes_every_check_and_reports_its_sizing():
  report = checker.check(seeds.seed("gpt"))
  assert report.passed, report.to_json()
  assert [c.name for c in report.checks] == list(checker.NAMES) == [
      "format", "init", "forward", "causality", "differentiability", "stability", "parameter_budget",
      "efficiency", "effectiveness"]
  assert {c.status for c in report.checks} == {"pass"}
  sizing = report.to_dict()["sizing"]
  assert sizing["d_model"] == 128 and sizing["n_blocks"] == 2 and sizing["fits"]
  assert sizing["params"] == sizing["target_params"] == 429_056
  assert sizing["flops_vs_gpt"] == 1.0 and sizing["flops_per_step"] > 0


def test_a_warning_does_not_stop_the_checks():
  cfg = checker.default_config()
  cfg.flops_warn_ratio = 0.5
  report = checker.check(seeds.seed("gpt"), cfg)
  assert report.passed and [c.name for c in report.warnings()] == ["efficiency"]
  assert len(report.checks) == 9


def test_unknown_kind_fails_format():
  report = checker.check(U("Residual", [U("Nope")]))
  assert [c.name for c in report.checks] == ["format"]
  assert "unknown unit kind 'Nope'" in report.checks[0].message


def test_z_entry_read_before_it_is_written_fails_format():
  ok = U("Sequence", [U("StateWriter"), seeds.seed("gpt").children[0], U("StateReader")])
  assert z_flow_errors(ok, n_blocks=2) == []
  bad = U("Sequence", [U("StateReader"), seeds.seed("gpt").children[0], U("StateWriter")])
  report = checker.check(bad)
  assert [c.name for c in report.checks] == ["format"]
  message = report.checks[0].message
  assert "StateReader at [0] (block 0) reads Z['state'] before anything writes it" in message
  assert "written only later, by StateWriter at [2]" in message


def test_undeclared_z_read_fails_forward():
  tree = U("Sequence", [U("StateWriter"), seeds.seed("gpt").children[0], U("SilentReader")])
  report = checker.check(tree)
  (failed,) = report.failed()
  assert failed.name == "forward"
  assert ("SilentReader at [2] (blocks 0, 1) reads Z entries ['state'] its kind does not declare"
          in failed.message)


def test_a_declared_child_never_called_fails_forward_naming_the_parent():
  report = checker.check(gpt_with_mixer(U("FirstChildOnly", [U("CausalConv"), U("StateWriter")])))
  failed = report.checks[-1]
  assert failed.name == "forward" and failed.status == "fail", report.summary()
  assert "FirstChildOnly at [0, 0, 1]" in failed.message
  assert "never calls its child StateWriter (child 1)" in failed.message


def test_causal_conv_passes():
  report = checker.check(gpt_with_mixer(U("CausalConv", kernel_size=3)))
  assert report.passed, report.summary()


def test_heads_not_dividing_d_model_fail_init_and_name_the_unit():
  cfg = checker.default_config()
  cfg.d_model = 36
  report = checker.check(gpt_with_mixer(U("Attention", n_heads=8)), cfg)
  (failed,) = report.failed()
  assert failed.name == "init"
  assert "in Attention at [0, 0, 1] (block 0)" in failed.message
  assert "must split into 8 heads" in failed.message


def test_locations_from_module_paths_and_parameter_paths():
  tree = seeds.seed("gpt")
  names = ["LM", "blocks_1", "root", "1_Residual", "0_Sequence", "1_GatedMLP", "down"]
  where, rest = locate(names, tree)
  assert str(where) == "GatedMLP at [1, 0, 1] (block 1)" and rest == ["down"]
  names = ("root", "0_Residual", "0_Sequence", "1_Attention", "qkv", "kernel")
  keypaths = [tuple(map(jax.tree_util.DictKey, ("params", f"blocks_{b}") + names)) for b in (0, 1)]
  assert describe_params(keypaths, tree) == ["Attention at [0, 0, 1] (blocks 0, 1), parameter qkv/kernel"]


def test_rungs_need_a_context_length():
  cfg = checker.default_config()
  assert cfg.flops_fail_ratio == 3.0 and cfg.rung.seq_len == 128
  with pytest.raises(ValueError, match="seq_len"):
    checker.resolve_rung(dict(d_model=64, n_blocks=2, batch_size=8), cfg)
  rung = checker.resolve_rung(dict(d_model=64, n_blocks=2, batch_size=8, seq_len=64), cfg)
  assert rung.target_params == 117_248 and rung.memory_limit_gb == 0


CONFIG = '''
from ml_collections import ConfigDict
from genesys_jax import run_config
from train import rung

def get_config():
  c = run_config.default_config()
  c.data.seq_len = 64
  c.ladder.rungs = ("tiny",)
  c.rungs = ConfigDict(dict(tiny=rung.make(d_model=64, n_blocks=2, target_params=117_248, batch_size=4,
                                           train_tokens=1000)))
  return c
'''


def test_cli_exit_codes(tmp_path):
  good = tmp_path / "gpt.json"
  good.write_text(design_to_json(seeds.seed("gpt"), "gpt"))
  bad = tmp_path / "bad.json"
  bad.write_text(design_to_json(U("Residual", [U("Nope")])))
  broken = tmp_path / "broken.json"
  broken.write_text("{")
  config = tmp_path / "config.py"
  config.write_text(CONFIG)

  def cli(*args):
    return subprocess.run([sys.executable, "-m", "genesys_jax.cli.check", *args], capture_output=True, text=True)

  ok = cli(f"--design={good}", f"--config={config}", "--rung=tiny")
  assert ok.returncode == 0, ok.stderr
  out = json.loads(ok.stdout)
  assert out["passed"] is True and {c["status"] for c in out["checks"]} == {"pass"}
  assert set(out["checks"][0]) == {"name", "status", "message", "hint"}
  assert (out["sizing"]["d_model"], out["sizing"]["n_blocks"]) == (64, 2)
  assert "seq_len=64, batch 4 per device" in out["checks"][7]["message"]
  failed = cli(f"--design={bad}")
  assert failed.returncode == 1 and json.loads(failed.stdout)["passed"] is False
  unusable = cli(f"--design={broken}")
  assert unusable.returncode == 2 and "not valid JSON" in unusable.stderr
  assert len(unusable.stderr.strip().splitlines()[-1]) < 300
  no_rung = cli(f"--design={good}", f"--config={config}", "--rung=huge")
  assert no_rung.returncode == 2
  assert no_rung.stderr.strip().splitlines()[-1] == "error: unknown rung 'huge'; valid rungs: tiny"
