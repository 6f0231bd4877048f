"""The symbolic checker: accept a design or explain, check by check, why not.

`check(tree, cfg, rung)` runs these checks in order and stops at the first failure (each builds on
the ones before it); a warning does not stop it. Every verdict names the unit to blame (kind, tree
path, block) when there is one, and gives a hint for the repair.

  1. format             types (kinds, child roles, hyperparameter domains); every Z entry a unit
                        reads is written before it (the one rule of `gab.checks.zrule`)
  2. init               parameters initialise (float32, finite) at the check scale
  3. forward            every unit returns its input's shape and dtype, uses only the Z entries
                        its kind declares (reads found by gradients, whatever the route: z.items(),
                        copies) and never mutates the Z it is given; logits float32 [batch, length,
                        vocab], finite, also in the compute dtype; the logits depend on the tokens
                        and every sequence mixer mixes positions
  4. causality          exact structural tests (`gab.checks.structural`): zero gradients of the
                        logits, of every unit output and of every Z entry (any layout) at positions
                        <= t w.r.t. the tokens after t, and of other sequences w.r.t. one sequence,
                        at two prime lengths (one longer than the rung's context and than twice
                        every declared chunk/window/kernel), two batch sizes, float32 and the
                        compute dtype, at initial, perturbed, large-input and trained parameters;
                        token replacement (non-differentiable leaks); a sequence equals itself run
                        alone, and its prefix's outputs the prefix of its outputs
  5. differentiability  every parameter gets a finite gradient (also in the compute dtype), nonzero
                        within a few steps of the trainer's own train step
  6. stability          the step compiled ahead of time at the rung's context length (failing if
                        its memory is over the limit, before it runs), then loss and gradients
                        finite there, and with token embeddings scaled x`large_input_scale`, in
                        float32 and the compute dtype
  7. parameter_budget   a d_model/n_blocks within the rung's target_params +- size_tolerance
                        (`gab.sizing.fit`); the chosen sizing is `report.sizing`
  8. efficiency         FLOPs (counted from the jaxpr: grouped convolutions per group, scan trip
                        counts; a while_loop makes it time the step against GPT's) and memory of
                        the train step compiled ahead of time at the rung's shapes, relative to the
                        GPT seed's; fits the memory limit
  9. effectiveness      `train_steps` steps of the trainer's step on a fixed batch lower the loss

Each check runs under a wall-clock limit, `checker.timeout_s` (`gab.checks.timeout`): a design that
hangs fails the check it hangs in. The compute dtype is the rung's `dtype`, else `checker.dtype`
(bfloat16 in the paper ladder).

`cfg` is the check scale (`default_config()`); `rung` is the rung a design will train at: a
ConfigDict with d_model, n_blocks, target_params (0: the GPT seed's size at d_model/n_blocks),
batch_size, memory_limit_gb (0: the device's memory, if known) and seq_len (the context length).
Without a rung, checks 6-8 use the built-in `cfg.rung`: d_model 128, n_blocks 2, batch_size 8,
seq_len 128, the GPT seed's size there (429,056 parameters), no memory limit.

CLI: `python -m genesys_jax.cli.check --design=FILE.json [--rung=NAME] [--config=...]` (also as
`python -m gab.checker`) prints one JSON object {"passed", "checks": [{"name", "status", "message",
"hint"}], "sizing"} and exits 0 (passed), 1 (failed) or 2 (unusable input); it resolves the config
and hands this module plain values (see genesys_jax/cli/check.py).
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from gab import seeds, sizing
from gab.checks.base import FAIL, PASS, WARN, Check, Report, one_line  # noqa: F401 (the API)
from gab.checks import probe
from gab.checks.budget import check_efficiency, check_parameter_budget
from gab.checks.causality import check_causality
from gab.checks.context import Context
from gab.checks.structure import check_forward, check_format, check_init
from gab.checks.timeout import run_with_timeout
from gab.checks.training import check_differentiability, check_effectiveness, check_stability
from gab.tree import DesignError, Unit, design_to_json, load_design, load_design_file  # noqa: F401

CHECKS = (check_format, check_init, check_forward, check_causality, check_differentiability,
          check_stability, check_parameter_budget, check_efficiency, check_effectiveness)
NAMES = ("format", "init", "forward", "causality", "differentiability", "stability",
         "parameter_budget", "efficiency", "effectiveness")


def default_config() -> ml_collections.ConfigDict:
  """The check scale (tiny: a full check takes seconds on a CPU) and the checks' thresholds."""
  return ml_collections.ConfigDict(dict(
      d_model=64, n_blocks=2, vocab_size=259, seq_len=32, batch=2, seed=0,
      causal_rtol=1e-5,             # see gab.checks.causality
      prefix_rtol=1e-4,             # causality: a sequence alone / its prefix vs in the batch / whole
      min_input_dependence=1e-3,    # forward: relative logit change per relative embedding change
      min_mixing=1e-4,              # forward: a mixer's output at t vs inputs s < t, relative
      timeout_s=300.0,              # wall-clock limit of each check (0: none)
      dtype="float32",              # compute dtype, unless the rung names one ("bfloat16")
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


def check(tree: Unit, cfg: ml_collections.ConfigDict | None = None, rung=None,
          progress: Callable[[str], None] | None = None) -> Report:
  """Run the checks in order, stopping at the first failure (later checks need its results).

  `progress(name)`, if given, is called before each check starts."""
  cfg = complete_config(cfg)
  ctx = Context(tree, cfg, resolve_rung(rung, cfg))
  checks: list[Check] = []
  for name, fn in zip(NAMES, CHECKS):
    if progress is not None:
      progress(name)
    try:
      finished, result = run_with_timeout(lambda fn=fn: fn(ctx), cfg.timeout_s)
      checks.append(result if finished else Check(
          name, FAIL, f"the check did not finish within its timeout of {cfg.timeout_s:g} s "
          f"(checker.timeout_s): the design hangs or is far too slow at the check scale",
          "look for loops that never end (a while_loop whose condition stays true, Python loops "
          "over traced values) or work that grows much faster than the sequence length"))
    except Exception as e:  # noqa: BLE001 - a design must never crash the loop that checks it
      checks.append(Check(name, FAIL, f"the check crashed: {probe.error_text(e)}", probe.hint_for(
          e, "if the design looks right, this is a checker bug: report it")))
    if checks[-1].status == FAIL:
      break
  return Report(checks, ctx.sizing)


if __name__ == "__main__":  # the old command, kept: `python -m gab.checker` is `genesys_jax.cli.check`
  from genesys_jax.cli import check as _cli  # pylint: disable=g-import-not-at-top
  _cli.run()
