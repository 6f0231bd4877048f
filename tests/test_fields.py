"""Config fields defined once (gab/fields.py): defaults, rules, help and result-affecting flags."""

import dataclasses

import ml_collections
import pytest

from conftest import ladder_config
from gab import fields
from genesys_jax import resolve, run_config, validate
from train import rung as rung_lib


@dataclasses.dataclass(frozen=True)
class Inner:
  x: float = fields.field(0.5, "a probability", fields.probability)


@dataclasses.dataclass(frozen=True)
class Outer:
  n: int = fields.field(3, "a count", fields.integer(1))
  name: str = fields.field("a", "a name", fields.one_of("a", "b"), results=False)
  inner: Inner = fields.section(Inner, "nested")
  table: dict = fields.table(Inner, "named")

  def problems(self):
    return [f".n = {self.n}: expected n > x"] if self.n <= self.inner.x else []


def test_defaults_records_and_errors_come_from_one_definition():
  cfg = fields.defaults(Outer)
  assert cfg.to_dict() == {"n": 3, "name": "a", "inner": {"x": 0.5}, "table": {}}
  cfg.table = ml_collections.ConfigDict(dict(t=dict(x=0.25)))
  assert fields.errors(Outer, cfg, "c") == []
  assert fields.record(Outer, cfg) == Outer(3, "a", Inner(0.5), {"t": Inner(0.25)})
  cfg.n, cfg.inner.x, cfg.table.t.x = 0, 2.0, -1.0
  assert fields.errors(Outer, cfg, "c") == ["c.n = 0: expected an integer >= 1",
                                            "c.inner.x = 2.0: expected a probability in [0, 1]",
                                            "c.table.t.x = -1.0: expected a probability in [0, 1]"]
  cfg = ml_collections.ConfigDict(dict(n=1, name="a", inner=dict(x=0.5), table={}, typo=1))
  assert fields.errors(Outer, cfg, "c") == ["c.typo: unknown field (fields here: n, name, inner, table)"]
  del cfg["typo"]
  assert fields.errors(Outer, cfg, "c") == []
  cfg.inner.x = 1.0
  assert fields.errors(Outer, cfg, "c") == ["c.n = 1: expected n > x"]  # problems() once fields pass
  del cfg["name"]
  assert fields.errors(Outer, cfg, "c")[0] == "c.name: missing (expected a name; default 'a')"
  assert [(p, f.results) for p, f in fields.walk(Outer)] == [
      ("n", True), ("name", False), ("inner.x", True), ("table.*.x", True)]
  assert [(f.help, d) for f, d in map(lambda p: fields.lookup(Outer, p), ("name", "inner.x", "table.t.x"))] == [
      ("a name", "a"), ("a probability", 0.5), ("a probability", 0.5)]
  assert [fields.lookup(Outer, p) for p in ("inner", "table.t", "nope", "n.x", "inner.y")] == [None] * 5


def test_every_field_of_a_run_has_help_and_the_ladder_configs_validate():
  paths = list(fields.walk(run_config.RunConfig))
  assert len(paths) > 100 and all(spec.help and spec.rule for _, spec in paths)
  for variant in ("", "smoke", "discovery", "paper", "llm_smoke"):
    assert validate.config_errors(ladder_config(variant)) == [], variant
  affecting = set(run_config.result_affecting())
  assert {"seed", "data.seq_len", "data.vocab", "rungs.*.lr", "rungs.*.train_tokens", "checker.seed",
          "evolution.mode_probs.mutation", "designer.models.coder"} <= affecting
  harmless = {p for p, _ in paths} - affecting
  assert {"jobs.poll_s", "jobs.in_process", "report", "replay_from", "train.log_every",
          "train.save_every", "store.url", "data.data_dir"} <= harmless


def test_a_rungs_context_length_is_data_seq_len_alone():
  config = ladder_config("smoke")
  config.rungs.tiny.seq_len = 256
  assert validate.config_errors(config) == [
      "config.rungs.tiny.seq_len: unknown field (it is data.seq_len, the context length of every rung) "
      f"(fields here: {', '.join(fields.definitions(rung_lib.Rung))})"]
  resolved = resolve.resolve(ladder_config("smoke"))
  assert {r.seq_len for r in resolved.rungs.values()} == {64} and resolve.resolve(resolved) == resolved
  with resolved.unlocked():
    resolved.data.seq_len = 32
  with pytest.raises(ValueError, match="rungs.small.seq_len = 64 differs from data.seq_len = 32"):
    resolve.resolve(resolved)


def test_a_derived_field_set_by_hand_is_refused():
  config = ladder_config("smoke")
  config.checker.vocab_size = 1000
  assert validate.config_errors(config) == [
      "config.checker.vocab_size = 1000: a run sets it from data.vocab; set that instead and leave "
      "this at 259"]


def test_rung_make_takes_only_rung_fields():
  assert rung_lib.make(lr=1e-3).lr == 1e-3 and rung_lib.make().grad_accum == 1
  with pytest.raises(TypeError, match="seq_len"):
    rung_lib.make(seq_len=64)
