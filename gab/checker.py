"""The symbolic checker: accept a design or explain, check by check, why not.

`check(tree, cfg, rung)` runs these checks in order and stops at the first failure (each builds on
the ones before it); a warning does not stop it. Every verdict names the unit to blame (kind, tree
path, block) when there is one, and gives a hint for the repair.

  1. format             types (kinds, child roles, hyperparameter domains); every Z entry a unit
                        reads is written before it, walking the units in execution order
  2. init               parameters initialise (float32, finite) at the check scale
  3. forward            every unit returns its input's shape and dtype and uses only the Z entries
                        its kind declares; logits float32 [batch, length, vocab], finite
  4. causality          logits and Z at position t ignore every token after t (all t at once)
  5. differentiability  every parameter gets a finite gradient, nonzero within a few steps
  6. stability          loss and gradients finite at the rung's context length, and with the
                        token embeddings scaled x`large_input_scale`
  7. parameter_budget   a d_model/n_blocks within the rung's target_params +- size_tolerance
                        (`gab.sizing.fit`); the chosen sizing is `report.sizing`
  8. efficiency         FLOPs and memory of the train step compiled ahead of time at the rung's
                        shapes, relative to the GPT seed's; fits the memory limit
  9. effectiveness      `train_steps` AdamW steps on a fixed batch lower the loss

`cfg` is the check scale (`default_config()`); `rung` is the rung a design will train at: a
ConfigDict with d_model, n_blocks, target_params (0: the GPT seed's size at d_model/n_blocks),
batch_size, memory_limit_gb (0: the device's memory, if known) and seq_len (the context length).
Without a rung, checks 6-8 use the built-in `cfg.rung`: d_model 128, n_blocks 2, batch_size 8,
seq_len 128, the GPT seed's size there (429,056 parameters), no memory limit.

CLI: `python -m gab.checker --design=FILE.json [--rung=NAME] [--config=configs/ladder.py]` prints
one JSON object {"passed", "checks": [{"name", "status", "message", "hint"}], "sizing"} and exits 0
(passed), 1 (failed) or 2 (unusable input). `--rung` picks `config.rungs[NAME]` (seq_len from
`config.data.seq_len`) and the check scale `config.checker`; the config file, configs/ladder.py by
default, is read only when --config or --rung is given.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import ml_collections

from gab import seeds, sizing
from gab.checks.base import FAIL, PASS, WARN, Check, Report, one_line  # noqa: F401 (the API)
from gab.checks.budget import check_efficiency, check_parameter_budget
from gab.checks.causality import check_causality
from gab.checks.context import Context
from gab.checks.structure import check_forward, check_format, check_init
from gab.checks.training import check_differentiability, check_effectiveness, check_stability
from gab.tree import DesignError, Unit, design_to_json, load_design, load_design_file  # noqa: F401

CHECKS = (check_format, check_init, check_forward, check_causality, check_differentiability,
          check_stability, check_parameter_budget, check_efficiency, check_effectiveness)
NAMES = ("format", "init", "forward", "causality", "differentiability", "stability",
         "parameter_budget", "efficiency", "effectiveness")
DEFAULT_LADDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "ladder.py")


def default_config() -> ml_collections.ConfigDict:
  """The check scale (tiny: a full check takes seconds on a CPU) and the checks' thresholds."""
  return ml_collections.ConfigDict(dict(
      d_model=64, n_blocks=2, vocab_size=259, seq_len=32, batch=2, seed=0,
      causal_rtol=1e-5,             # see gab.checks.causality
      large_input_scale=100.0,      # stability: token embeddings multiplied by this
      train_steps=10, train_lr=3e-3,  # differentiability and effectiveness
      size_tolerance=0.2, min_d_model=64, d_model_multiple=32,  # parameter_budget
      flops_warn_ratio=1.5, flops_fail_ratio=3.0,    # efficiency, relative to the GPT seed
      memory_warn_ratio=2.0, memory_fail_ratio=4.0,
      # The rung used when check() gets none: wide enough that sizing can narrow d_model (128 -> 96
      # -> 64), not only drop blocks; target_params 0 is the GPT seed's size at d_model/n_blocks.
      rung=dict(d_model=128, n_blocks=2, target_params=0, batch_size=8, seq_len=128,
                memory_limit_gb=0.0),
  ))


def complete_config(cfg: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
  """`cfg` with the fields it lacks (an older stored config) taken from `default_config()`."""
  full = default_config().to_dict()
  full.update(cfg.to_dict() if cfg is not None else {})
  return ml_collections.ConfigDict(full)


def resolve_rung(rung, cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of the rung (or `cfg.rung`) with target_params and memory_limit_gb filled in."""
  r = ml_collections.ConfigDict(dict(rung if rung is not None else cfg.rung))
  missing = [k for k in ("d_model", "n_blocks", "batch_size", "seq_len") if k not in r]
  if missing:
    raise ValueError(f"rung lacks {missing}; set rung.seq_len from config.data.seq_len")
  if not r.get("target_params"):
    r.target_params = sizing.lm_params(seeds.seed("gpt"), cfg.vocab_size, r.d_model, r.n_blocks,
                                       r.seq_len)
  if "memory_limit_gb" not in r:
    r.memory_limit_gb = 0.0
  return r


def check(tree: Unit, cfg: ml_collections.ConfigDict | None = None, rung=None) -> Report:
  """Run the checks in order, stopping at the first failure (later checks need its results)."""
  cfg = complete_config(cfg)
  ctx = Context(tree, cfg, resolve_rung(rung, cfg))
  checks: list[Check] = []
  for name, fn in zip(NAMES, CHECKS):
    try:
      checks.append(fn(ctx))
    except Exception as e:  # noqa: BLE001 - a design must never crash the loop that checks it
      checks.append(Check(name, FAIL, f"the check crashed: {one_line(e)}",
                          "if the design looks right, this is a checker bug: report it"))
    if checks[-1].status == FAIL:
      break
  return Report(checks, ctx.sizing)


def load_config(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("ladder_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  FLAGS = flags.FLAGS  # noqa: N806
  try:
    tree, name, units = load_design_file(FLAGS.design)
  except DesignError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  config = FLAGS.config
  if config is None and FLAGS.rung:
    config = load_config(DEFAULT_LADDER)
  cfg, rung = (config.checker if config is not None else None), None
  if FLAGS.rung:
    if FLAGS.rung not in config.rungs:
      print(f"error: unknown rung {FLAGS.rung!r}; valid rungs: {', '.join(config.rungs)}",
            file=sys.stderr)
      return 2
    rung = ml_collections.ConfigDict(config.rungs[FLAGS.rung].to_dict())
    rung.seq_len = config.data.seq_len
  if units:  # code units run only in the sandbox (gab.sandbox), never in this process
    from gab import sandbox  # pylint: disable=g-import-not-at-top
    report = sandbox.check_design(design_to_json(tree, name, units), cfg, rung)
    print(json.dumps(report, sort_keys=True))
    return 0 if report["passed"] else 1
  report = check(tree, cfg, rung)
  print(report.to_json())
  return 0 if report.passed else 1


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("design", None, "Design JSON file to check (as written by gab.seeds).")
  flags.DEFINE_string("rung", None, "Check at config.rungs[RUNG] (default: a small built-in rung).")
  config_flags.DEFINE_config_file("config", None, f"Ladder config file (default {DEFAULT_LADDER}, "
                                  "read when --rung is given).")
  flags.mark_flag_as_required("design")
  app.run(lambda argv: sys.exit(main(argv)))
