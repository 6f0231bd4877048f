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
                        every declared chunk/window/kernel shorter than the context), two batch
                        sizes, float32 and the compute dtype, at initial, perturbed, large-input
                        and trained parameters;
                        forward replacement at every split point on the trained program kind, at
                        the rung's context length and its half, in every compute dtype, at initial,
                        trained and gate-opening parameters (`gab.checks.replacement`: whatever
                        the design's VJP says); its prefix's outputs the prefix of its outputs
  5. differentiability  every parameter gets a finite gradient (also in the compute dtype), nonzero
                        within a few steps of the trainer's own train step
  6. stability          the step compiled ahead of time at the rung's context length (failing if
                        its memory is over the limit, before it runs), then loss and gradients
                        finite there, and with token embeddings scaled x`large_input_scale`, in
                        float32 and the compute dtype
  7. parameter_budget   a d_model/n_blocks within the rung's target_params +- size_tolerance
                        (`gab.sizing.fit`); the chosen sizing is `report.sizing`
  8. efficiency         FLOPs (counted from the jaxpr: grouped convolutions per group, scan trip
                        counts, linear algebra/FFT/sort rules, conds at their dearest branch; a
                        while_loop, a cond or a factorisation makes it time the step against GPT's,
                        compiled as for training) and memory (constants included) of the train
                        step compiled ahead of time at the rung's shapes, relative to the GPT
                        seed's; fits the memory limit
  9. effectiveness      `train_steps` steps of the trainer's step on a fixed batch lower the loss

Each check runs under a wall-clock limit, `checker.timeout_s` (`gab.checks.timeout`): a design that
hangs fails the check it hangs in. The compute dtype is the rung's `dtype`, else `checker.dtype`
(bfloat16 in the paper ladder).

The checks judge programs, not Python: the design's unit code runs only while `gab.checks.trace`
traces and exports it (`gab.programs`); every check then runs those programs in the checking
process. `check` does both here (built-in units only); for a design with code units
`gab.sandbox.check_design` traces in the sandbox and judges in `verify_in_child`, a process that
never runs the design's Python: nothing the units import or patch can reach the verdict.

`cfg` is the check scale (`default_config()`); `rung` is the rung a design will train at: a
ConfigDict with d_model, n_blocks, target_params (0: the GPT seed's size at d_model/n_blocks),
batch_size, memory_limit_gb (0: the device's memory, if known) and seq_len (the context length).
Without a rung, checks 6-8 use the built-in `cfg.rung`: d_model 128, n_blocks 2, batch_size 8,
seq_len 128, the GPT seed's size there (429,056 parameters), no memory limit.

CLI: `python -m genesys_jax.cli.check --design=FILE.json [--rung=NAME] [--config=...]` prints one JSON object {"passed", "checks": [{"name", "status", "message",
"hint"}], "sizing"} and exits 0 (passed), 1 (failed) or 2 (unusable input); it resolves the config
and hands this module plain values (see genesys_jax/cli/check.py).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import ml_collections

from gab import fields, seeds, sizing
from gab.checks.base import FAIL, PASS, WARN, Check, Report, one_line  # noqa: F401 (the API)
from gab.checks import probe
from gab.checks.budget import check_efficiency, check_parameter_budget
from gab.checks.causality import check_causality
from gab.checks.context import Context
from gab.checks.structure import check_forward, check_format, check_init
from gab.checks.timeout import run_with_timeout
from gab.checks.training import check_differentiability, check_effectiveness, check_stability
from gab.programs import Programs, ProgramError
from gab.tree import DesignError, Unit, design_to_json, load_design, load_design_file  # noqa: F401

CHECKS = (check_format, check_init, check_forward, check_causality, check_differentiability,
          check_stability, check_parameter_budget, check_efficiency, check_effectiveness)
NAMES = ("format", "init", "forward", "causality", "differentiability", "stability",
         "parameter_budget", "efficiency", "effectiveness")


DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class CheckRung:
  """The rung used when check() gets none: wide enough that sizing can narrow d_model (128 -> 96 ->
  64), not only drop blocks."""
  d_model: int = fields.field(128, "width the design is sized from", fields.integer(1))
  n_blocks: int = fields.field(2, "blocks the design is sized from", fields.integer(1))
  target_params: int = fields.field(0, "parameters to size to (0: the GPT seed's at d_model, n_blocks)",
                                    fields.integer(0))
  batch_size: int = fields.field(8, "batch of the stability and efficiency steps", fields.integer(1))
  seq_len: int = fields.field(128, "context length of the long probes and compiled steps", fields.integer(1))
  memory_limit_gb: float = fields.field(0.0, "memory limit (0: the device's, if known)", fields.number(0.0))


@dataclasses.dataclass(frozen=True)
class CheckerConfig:
  """The check scale (tiny: a full check takes seconds on a CPU) and the checks' thresholds."""
  d_model: int = fields.field(64, "width of the check-scale model", fields.integer(1))
  n_blocks: int = fields.field(2, "blocks of the check-scale model", fields.integer(1))
  vocab_size: int = fields.field(259, "vocabulary designs are sized against", fields.integer(2),
                                 derived="data.vocab")
  seq_len: int = fields.field(32, "context length of the short probes", fields.integer(1))
  batch: int = fields.field(2, "batch of the check-scale probes", fields.integer(1))
  seed: int = fields.field(0, "seed of the probes' parameters and tokens", fields.integer(0))
  causal_rtol: float = fields.field(1e-5, "causality tolerance (gab.checks.causality)", fields.number(0.0))
  prefix_rtol: float = fields.field(1e-4, "causality: a sequence alone / its prefix vs in the batch",
                                    fields.number(0.0))
  min_input_dependence: float = fields.field(1e-3, "forward: relative logit change per relative "
                                             "embedding change", fields.number(0.0))
  min_mixing: float = fields.field(1e-4, "forward: a mixer's output at t vs inputs s < t, relative",
                                   fields.number(0.0))
  timeout_s: float = fields.field(300.0, "wall-clock limit of each check (0: none)", fields.number(0.0))
  dtype: str = fields.field("float32", "compute dtype, unless the rung names one", fields.one_of(*DTYPES))
  large_input_scale: float = fields.field(100.0, "stability: token embeddings multiplied by this",
                                          fields.number(0.0, lo_open=True))
  train_steps: int = fields.field(10, "differentiability and effectiveness steps", fields.integer(1))
  train_lr: float = fields.field(3e-3, "their learning rate", fields.number(0.0, lo_open=True))
  gate_scale: float = fields.field(10.0, "causality: vectors and scalars driven to about +-this "
                                   "(parameter points that open gates)", fields.number(0.0, lo_open=True))
  matrix_scale: float = fields.field(3.0, "causality: matrices multiplied by this at those points",
                                     fields.number(0.0, lo_open=True))
  size_tolerance: float = fields.field(0.2, "parameter_budget: relative distance to target_params",
                                       fields.number(0.0, 1.0, hi_open=True))
  min_d_model: int = fields.field(64, "sizing: narrowest d_model", fields.integer(1))
  d_model_multiple: int = fields.field(32, "sizing: d_model step", fields.integer(1))
  flops_warn_ratio: float = fields.field(1.5, "efficiency: FLOPs over the GPT seed's, warning",
                                         fields.number(0.0, lo_open=True))
  flops_fail_ratio: float = fields.field(3.0, "efficiency: FLOPs over the GPT seed's, failure",
                                         fields.number(0.0, lo_open=True))
  memory_warn_ratio: float = fields.field(2.0, "efficiency: memory over the GPT seed's, warning",
                                          fields.number(0.0, lo_open=True))
  memory_fail_ratio: float = fields.field(4.0, "efficiency: memory over the GPT seed's, failure",
                                          fields.number(0.0, lo_open=True))
  rung: CheckRung = fields.section(CheckRung, "the rung used when check() gets none")

  def problems(self) -> list[str]:
    return [f".{kind}_fail_ratio = {getattr(self, f'{kind}_fail_ratio')!r}: expected >= "
            f"{kind}_warn_ratio {getattr(self, f'{kind}_warn_ratio')!r}"
            for kind in ("flops", "memory")
            if getattr(self, f"{kind}_fail_ratio") < getattr(self, f"{kind}_warn_ratio")]


def default_config() -> ml_collections.ConfigDict:
  return fields.defaults(CheckerConfig)


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
  """Trace the design here (its units must be built in: they run in this process) and verify it."""
  return verify(tree, cfg, rung, None, progress)


def verify(tree: Unit, cfg, rung, programs: Programs | None,
           progress: Callable[[str], None] | None = None) -> Report:
  """Run the checks in order on the design's exported `programs` (None: traced here once the
  format check has passed), stopping at the first failure (later checks need its results).

  `progress(name)`, if given, is called before each check starts."""
  cfg = complete_config(cfg)
  ctx = Context(tree, cfg, resolve_rung(rung, cfg), programs)
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
    except ProgramError as e:
      checks.append(Check(name, FAIL, f"{e}", e.hint or "every unit must trace at every shape and "
                          "width the checks and the rung use"))
    except Exception as e:  # noqa: BLE001 - a design must never crash the loop that checks it
      checks.append(Check(name, FAIL, f"the check crashed: {probe.error_text(e)}", probe.hint_for(
          e, "if the design looks right, this is a checker bug: report it")))
    if checks[-1].status == FAIL:
      break
  return Report(checks, ctx.sizing)


def trace_in_child(job: dict) -> dict:
  """The sandbox's side of `gab.sandbox.check_design`: register the design's code units, trace
  (`gab.checks.trace`), save the programs in job["out"]; the facts' size in bytes (the parent
  reads the files)."""
  from gab import codeunits  # pylint: disable=g-import-not-at-top
  from gab.checks import trace  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json, design_units  # pylint: disable=g-import-not-at-top
  tree, _ = design_from_json(job["design"])
  for source in design_units(job["design"]).values():
    codeunits.register(source)
  cfg = complete_config(ml_collections.ConfigDict(job["cfg"]) if job.get("cfg") else None)
  rung = resolve_rung(ml_collections.ConfigDict(job["rung"]) if job.get("rung") else None, cfg)
  programs = trace.trace(tree, cfg, rung, fingerprint=job.get("fingerprint", False))
  programs.save(job["out"])
  return {"programs": len(programs.exported),
          "facts_bytes": os.path.getsize(os.path.join(job["out"], "facts.json"))}


def verify_in_child(job: dict) -> dict:
  """The trusted side of `gab.sandbox.check_design`, in a process that never runs the design's
  Python: its code units are only declared; the programs the sandbox saved in job["programs"]
  are loaded (refused if they can reach the host) and judged. The report dict, with
  "fingerprint" when asked and passed."""
  from gab import canonical, codeunits  # pylint: disable=g-import-not-at-top
  from gab.checks import trace  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json, design_units  # pylint: disable=g-import-not-at-top
  for source in design_units(job["design"]).values():
    codeunits.declare(source)
  tree, _ = design_from_json(job["design"])
  cfg = complete_config(ml_collections.ConfigDict(job["cfg"]) if job.get("cfg") else None)
  rung = resolve_rung(ml_collections.ConfigDict(job["rung"]) if job.get("rung") else None, cfg)
  try:
    programs = Programs.load(job["programs"])
  except ProgramError as e:
    return Report([Check("sandbox", FAIL, str(e), "code units run inside compiled programs only: "
                         "no host callbacks, no custom calls")]).to_dict()
  report = verify(tree, cfg, rung, programs).to_dict()
  if job.get("fingerprint") and report["passed"]:
    if trace.FINGERPRINT in programs.exported:
      y = programs.exported[trace.FINGERPRINT].call(canonical.fingerprint_input())
      report["fingerprint"] = canonical.digest(y)
  return report
