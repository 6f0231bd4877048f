"""The loop's side of code units: what the controller process may do with them, and the sandbox for
the rest.

The controller only *declares* code units (`gab.codeunits.declare`: no code runs), so proposing,
typing, canonical forms and selection work on them; checking (`gab.sandbox.check_design`) and
training (`train.sandboxed.train_design`) a design that uses one happen in sandboxed children without
the controller's environment. Designs built from built-in kinds only take the in-process paths.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from evolution import canonical
from evolution.store import Store
from gab import checker, codeunits, registry, sandbox, seeds
from gab.checks.base import Check, Report
from gab.tree import Unit, design_to_json
from train import sandboxed


def declare_stored(store: Store) -> list[str]:
  """Declare the code units the store keeps (a resumed run, a worker); their kinds."""
  return [codeunits.declare(row["source"]) for row in store.code_units()]


def declare_files(files: tuple[str, ...]) -> list[str]:
  """Declare the hand-written code units of `config.units.files`; their kinds (for the store to
  keep, design_id NULL: `record.code_units`)."""
  return list(codeunits.load_files(files))


def seed(name: str) -> tuple[Unit, str]:
  """A seed of `config.seeds`: a name of `gab.seeds`, or a design file (`*.json`, /1 or /2: the code
  units it carries are declared, not run)."""
  if name.endswith(".json"):
    tree, stored_name, _ = codeunits.read_design_file(name)
    return registry.normalize(tree), stored_name or os.path.splitext(os.path.basename(name))[0]
  return seeds.seed(name), name


def uses_code(tree: Unit) -> bool:
  return bool(codeunits.kinds_in(tree))


def design_json(tree: Unit, name: str | None = None) -> str:
  """The design JSON to store: /2 with the sources of the code units it uses, else /1."""
  return design_to_json(tree, name, codeunits.sources_for(tree))


def check(tree: Unit, cfg, rung) -> tuple[Report, str | None]:
  """(report, fingerprint) of a design with code units, both computed in the sandbox."""
  result = sandbox.check_design(design_json(tree), cfg, rung, fingerprint=True)
  report = Report([Check(**c) for c in result["checks"]], result.get("sizing", {}))
  return report, result.get("fingerprint")


def check_tree(tree: Unit, cfg, rung, in_process: Callable[[], Report] | None = None
               ) -> tuple[Report, str | None]:
  """(report, fingerprint) of any design, as the loop and the verifier workers check it: a design
  with code units in the sandbox (its code runs nowhere else); any other by `in_process()` (default:
  `gab.checker.check` at `rung`). The fingerprint (`gab.canonical.fingerprint`, the function the
  block computes) is given only for a design that passed; None otherwise."""
  if uses_code(tree):
    return check(tree, cfg, rung)
  report = in_process() if in_process is not None else checker.check(tree, cfg, rung)
  return report, canonical.fingerprint(tree) if report.passed else None


def train(design: dict[str, Any], rung, config, run) -> dict[str, Any]:
  """Sizing and training of a stored design with code units, in the sandbox; its metrics (`run`: a
  `train.trainer.Run`). Raises `sandbox.DesignFailure` or `sandbox.SandboxError` (the loop records a
  failed run)."""
  out = sandboxed.train_design(design["tree"], rung, data_cfg=config.data, train_cfg=run.train,
                               checker_cfg=config.checker, seed=run.seed,
                               checkpoint_dir=run.checkpoint_dir, log_dir=run.log_dir,
                               zeroshot_cfg=run.zeroshot, desc=run.desc)
  return out["metrics"]
