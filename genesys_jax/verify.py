"""The verify stage: one design trained at one rung, as a `Verification` or a `Failure` (nothing
recorded: the in-process worker and verifier workers record it through `genesys_jax/record.py`).

The design is sized to the rung's parameter budget (`checker.size_tolerance` holds on every rung)
and trained in this process, or in the sandbox if it uses code units. What a design can do wrong in
training that the checker could not foresee (divergence, out of memory at a larger rung, a width its
hyperparameters do not fit) is a `Failure`, so a restarted run does not stumble on it again;
anything else is a bug or a bad config and raises. A design whose trained parameters fail the
post-training audit (`gab.audit`: it learned to leak) is `Leaking`: its metrics are voided.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections

from gab import audit, codeunits, sandbox, sizing
from gab.tree import DesignError
from genesys_jax import code_units
from train import data as data_lib
from train import trainer

_DESIGN_FAILURES = (FloatingPointError, DesignError, jax.errors.JaxRuntimeError,
                    sandbox.DesignFailure, sandbox.SandboxError)


@dataclasses.dataclass(frozen=True)
class Verification:
  design_id: str
  rung: str
  metrics: dict[str, Any]  # val_bpb, params, tokens, ...


@dataclasses.dataclass(frozen=True)
class Failure:
  design_id: str
  rung: str
  error: str               # `Type: first line of the message`

  @property
  def metrics(self) -> dict[str, Any]:
    return {"val_bpb": None, "params": None, "tokens": None, "error": self.error}


@dataclasses.dataclass(frozen=True)
class Leaking:
  design_id: str
  rung: str
  metrics: dict[str, Any]  # voided (`gab.audit.voided`): val_bpb None, the audit's error, "voided"


def verify(config: ml_collections.ConfigDict, data: Callable[[], data_lib.Corpus], design: dict[str, Any],
           rung_name: str, workdir: str, log: Callable[[str], None]) -> Verification | Failure | Leaking:
  """Train the stored `design` at rung `rung_name` of the resolved `config`, sized to its budget
  (`data()`: the corpus, loaded on first use; checkpoints and TensorBoard events under `workdir`)."""
  tree, _, _ = codeunits.read_design(design["tree"])  # its code units are declared, not run
  rung = config.rungs[rung_name]
  where = (design["id"], rung_name)
  coded = code_units.uses_code(tree)
  size = {} if coded else sizing.fit_to_rung(tree, rung, config.checker)  # sizing runs the code
  if size and not size["fits"]:
    return Failure(*where, f"SizeError: no sizing within +-{config.checker.size_tolerance:.0%} of "
                   f"{rung.target_params:,} parameters (closest: {size['params']})")
  log(f"  training {design['id']} at rung {rung_name} " + (
      "in the sandbox" if coded else f"(d_model {size['d_model']}, {size['n_blocks']} blocks)") + " ...")
  run = trainer.Run(seed=config.seed, train=config.train, zeroshot=config.zeroshot,
                    checkpoint_dir=os.path.join(workdir, "checkpoints", *where),
                    log_dir=os.path.join(workdir, "tensorboard", *where),
                    desc=f"{design['id'][:8]}@{rung_name}")
  try:
    if coded:
      metrics = code_units.train(design, rung, config, run)
    else:
      metrics, _ = trainer.train_and_evaluate(tree, sizing.sized(rung, size), data(), run)
  except _DESIGN_FAILURES as e:
    text = str(e).strip()
    return Failure(*where, f"{type(e).__name__}: {text.splitlines()[0] if text else ''}")
  leak = audit.voided(metrics)
  return Verification(*where, metrics) if leak is None else Leaking(*where, leak)


def line(result: Verification | Failure | Leaking) -> str:
  """The result's log line."""
  if isinstance(result, Failure):
    return f"  {result.design_id} failed at {result.rung}: {result.error}"
  if isinstance(result, Leaking):
    return f"  {result.design_id} LEAKS at {result.rung}: {result.metrics['error']}; its metrics are voided"
  m = result.metrics
  return (f"  {result.design_id} @ {result.rung}: val_bpb {m['val_bpb']:.4f}, {m['params']:,} params, "
          f"{m['tokens']:,} tokens")
