"""The checks' tracing step: every program `gab.checker` runs, exported where the design's code runs.

`trace(tree, cfg, rung)` is the only part of a check that runs unit code: in the checking process
for built-in designs, in the sandbox for designs with code units (`gab.checker.trace_in_child`, which saves the
programs for the trusted process that judges them, `gab.checker.verify_in_child`). It exports:

  - the check-scale init, then every program of `gab.checks.plan.Plan` (which needs the
    parameters' shapes);
  - for the budget checks: the sizing search's result (`gab.sizing.fit_to_rung`, facts["sizing"])
    and the train step's program at that sizing, at the rung's shapes in the compute dtype (its
    parameters are counted, its memory and time measured where they are judged); the FLOPs the
    jaxpr walk counts (`gab.checks.costs`) come back as facts["cost"], the checking side's own XLA
    count being their floor;
  - with `fingerprint`, the canonical block's program (`gab.canonical.fingerprint_program`).
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
from jax import export as jax_export

from gab import canonical, registry, sizing, train_step
from gab.checks import costs
from gab.checks.instrument import Instrument, where_json
from gab.checks.plan import Plan
from gab.checks.steps import optimizer
from gab.model import LM
from gab.programs import Programs, Spec, export, param_shapes
from gab.tree import Unit

FINGERPRINT = "fingerprint"


def compute_dtype(cfg, rung):
  """The dtype the design trains in: the rung's `dtype`, else the check config's."""
  return jnp.dtype(rung.get("dtype", None) or cfg.get("dtype", None) or "float32")


def check_dtypes(cfg, rung) -> list:
  """float32, then the compute dtype when it differs."""
  return list(dict.fromkeys([jnp.dtype(jnp.float32), compute_dtype(cfg, rung)]))


def per_device_batch(rung) -> int:
  """The micro-batch one device holds: the rung's global batch over devices and accumulation."""
  return max(1, rung.batch_size // (jax.device_count() * int(rung.get("grad_accum", 1))))


def sized_spec(cfg, rung, size: dict) -> Spec:
  """The train step's program of the design sized to the rung (its parameters are an argument)."""
  return Spec("stack", size["d_model"], size["n_blocks"], compute_dtype(cfg, rung).name,
              per_device_batch(rung), rung.seq_len, vjp=True)


def sized_init_spec(rung, size: dict) -> Spec:
  """The init of the design sized to the rung (exported when its step is to be timed)."""
  return Spec("init", size["d_model"], size["n_blocks"], batch=1, length=rung.seq_len)


def trace(tree: Unit, cfg: ml_collections.ConfigDict, rung: ml_collections.ConfigDict,
          fingerprint: bool = False) -> Programs:
  """Every program the checks run, and the facts of tracing them (see the module docstring).
  `cfg` complete and `rung` resolved (`gab.checker.complete_config`, `resolve_rung`). A process
  that checks the same design at the same configs again (the seeds, at every run's start) gets
  the same programs back: they are a function of exactly those."""
  tree = registry.normalize(tree)
  return _trace(tree, json.dumps(cfg.to_dict(), sort_keys=True), json.dumps(rung.to_dict(), sort_keys=True),
                fingerprint)


@functools.lru_cache(maxsize=8)
def _trace(tree: Unit, cfg_json: str, rung_json: str, fingerprint: bool) -> Programs:
  cfg, rung = (ml_collections.ConfigDict(json.loads(t)) for t in (cfg_json, rung_json))
  instrument = Instrument(tree)
  plan_init = Plan.init_spec(cfg)
  first = export(tree, cfg.vocab_size, [plan_init], instrument=instrument)
  if plan_init.key not in first.exported:
    return first
  plan = Plan(tree, cfg, rung, param_shapes(first, plan_init), check_dtypes(cfg, rung))
  extra = {}
  try:
    size = sizing.fit_to_rung(tree, rung, cfg)
  except Exception as e:  # noqa: BLE001 - the parameter_budget check reports it
    size = {"error": f"{type(e).__name__}: {e}"}
  extra["sizing"] = size
  programs = export(tree, cfg.vocab_size, plan.specs(), instrument=instrument)
  exported = {**first.exported, **programs.exported}
  errors = dict(instrument.facts["errors"])
  if size.get("params") is not None:  # its own instrument: facts are the check scale's
    extra["cost"] = reported_cost(tree, cfg, rung, size)
    # The efficiency check times a step whose cost the count cannot know, from the initial
    # parameters at the sized shape: their init is exported only then.
    timed = [sized_init_spec(rung, size)] if extra["cost"].get("unknown") else []
    sized = export(tree, cfg.vocab_size, [sized_spec(cfg, rung, size), *timed])
    exported.update(sized.exported)
    errors.update(sized.facts["errors"])
  if fingerprint:
    try:
      exported[FINGERPRINT] = jax_export.export(jax.jit(canonical.fingerprint_program(tree)))(
          canonical.fingerprint_input())
    except Exception as e:  # noqa: BLE001
      errors[FINGERPRINT] = f"{type(e).__name__}: {e}"
  return Programs(exported, {**instrument.facts, "errors": errors, **extra})


def reported_cost(tree: Unit, cfg, rung, size: dict) -> dict:
  """The jaxpr walk's count of the train step at the rung's shapes (`gab.checks.costs.measure`),
  as JSON; {"error"} if the step cannot be traced."""
  model = LM(tree, cfg.vocab_size, size["d_model"], size["n_blocks"], dtype=compute_dtype(cfg, rung))
  opt = optimizer(cfg.train_lr)
  inner = train_step.make_train_step(model, opt)
  try:
    cost = costs.measure(tree, lambda state, tokens, scale: inner(state, tokens), model, opt,
                         rung.seq_len, per_device_batch(rung), walk_only=True)
  except Exception as e:  # noqa: BLE001 - the efficiency check reports it
    return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
  rows = lambda table: [[list(p) if p is not None else None, v] for p, v in table.items()]  # noqa: E731
  return {"flops": cost.flops, "flops_low": cost.flops_low, "constant_bytes": cost.constant_bytes,
          "unit_flops": rows(cost.unit_flops), "unit_bytes": rows(cost.unit_bytes),
          "unknown": [[what, where_json(w)] for what, w in cost.unknown]}
