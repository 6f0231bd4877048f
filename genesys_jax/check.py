"""The check stage: a proposal's checker report and novelty test, as a `Verdict` (nothing recorded).

`examine(tree, ...)` runs the checker (in the sandbox for a design with code units, in this process
otherwise, under `guard` if given: genesys_jax/check_guard.py) and gives the report and the
functional fingerprint of a design that passed; `judge(...)` adds the novelty test against the
fingerprints `known` so far; `check(tree, ...)` is both. A verifier worker runs `examine` for a
checker job; the controller `judge`s its result at the barrier, in proposal order, against the
designs before it, exactly as `check` would have in-process.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from gab import checker
from gab.tree import Unit
from genesys_jax import code_units

Guard = Callable[[Unit, Callable[[Callable[[str], None]], checker.Report]], checker.Report]


@dataclasses.dataclass(frozen=True)
class Verdict:
  status: str                  # valid | rejected
  report: dict[str, Any]       # the checker's report as stored with the design
  fingerprint: str | None      # the function a valid design computes (kept to test later ones)

  def summary(self) -> str:
    """'passed', or each failed check with its message."""
    bad = [c for c in self.report.get("checks", []) if c["status"] == checker.FAIL]
    return "passed" if not bad else "; ".join(f"{c['name']}: {c['message']}" for c in bad)


def examine(tree: Unit, checker_cfg, rung, guard: Guard | None = None
            ) -> tuple[checker.Report, str | None]:
  """(report, fingerprint of a design that passed) at the rung (`code_units.check_tree`)."""
  in_process = None if guard is None else (
      lambda: guard(tree, lambda progress: checker.check(tree, checker_cfg, rung, progress)))
  return code_units.check_tree(tree, checker_cfg, rung, in_process=in_process)


def novelty_failure(twin: str) -> checker.Check:
  return checker.Check("novelty", checker.FAIL, f"computes the same function as stored design {twin}",
                       "change what the block computes, not only how it is written")


def judge(design_id: str, report: checker.Report, fingerprint: str | None,
          known: Mapping[str, Sequence[str]]) -> Verdict:
  """The verdict on a checked design: rejected if it failed a check, or if another design of
  `known` (fingerprint -> design ids) computes the same function (a failed `novelty` check)."""
  if not report.passed:
    return Verdict("rejected", report.to_dict(), None)
  twin = next((d for d in known.get(fingerprint, ()) if d != design_id), None) if fingerprint else None
  if twin is None:
    return Verdict("valid", report.to_dict(), fingerprint)
  return Verdict("rejected", checker.Report(report.checks + [novelty_failure(twin)],
                                            report.sizing).to_dict(), None)


def check(tree: Unit, checker_cfg, rung, known: Mapping[str, Sequence[str]],
          guard: Guard | None = None) -> Verdict:
  """`examine` then `judge`: the verdict the loop records with a proposal."""
  report, fingerprint = examine(tree, checker_cfg, rung, guard)
  return judge(tree.content_hash(), report, fingerprint, known)


def report_of(stored: dict[str, Any]) -> checker.Report:
  """A checker report from its stored (JSON) form."""
  return checker.Report([checker.Check(**c) for c in stored["checks"]], stored.get("sizing", {}))
