"""Time the full check of designs with code units, sandbox start included.

`python -m genesys_jax.cli.bench_checker --code_units` checks the GPT seed
with its attention or MLP replaced by each example code unit of tests/code_units, and one design
using all three, each in a fresh sandboxed child (`gab.sandbox.check_design`, as the loop does).
Prints the cost of starting a sandbox alone, one JSON line per design {"design", "wall_s",
"passed", "failed"}, then a summary line with the median wall time.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import time

from gab import codeunits, registry, sandbox
from gab.tree import Unit, design_to_json

U = Unit.make
UNITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "code_units")


def _gpt(mixer: Unit, mlp: Unit) -> Unit:
  return registry.normalize(U("Sequence", [U("Residual", [U("Sequence", [U("RMSNorm"), mixer])]),
                                           U("Residual", [U("Sequence", [U("RMSNorm"), mlp])])]))


def designs():
  kinds = {codeunits.parse(open(p).read()).name: codeunits.declare(open(p).read())
           for p in sorted(glob.glob(os.path.join(UNITS, "*.py")))}
  dc, sq, ts = kinds["DecayConv"], kinds["SqReluGate"], kinds["TokenShift"]
  attn, mlp = U("Attention", n_heads=4), U("GatedMLP", activation="silu")
  yield "gpt with DecayConv", _gpt(U(dc), mlp)
  yield "gpt with TokenShift", _gpt(U(ts), mlp)
  yield "gpt with SqReluGate", _gpt(attn, U(sq))
  yield "DecayConv + TokenShift + SqReluGate", registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(dc)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(ts)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(sq)])])]))


_FAILS_AT_IMPORT = '''"""Fails as soon as it is registered: the cost of starting a sandbox."""
from gab.units.base import UnitModule

KIND = dict(name="FailsAtImport", role="norm")
BOOM = 1 // 0


class FailsAtImport(UnitModule):
  pass
'''


def sandbox_start_s() -> float:
  """Wall time of a sandboxed check that ends at registering its unit: process start, isolation,
  importing JAX and the checker."""
  tree = U("Residual", [U(codeunits.declare(_FAILS_AT_IMPORT))])
  start = time.perf_counter()
  report = sandbox.check_design(design_to_json(tree, None, codeunits.sources_for(tree)))
  assert not report["passed"] and "ZeroDivisionError" in report["checks"][-1]["message"], report
  return time.perf_counter() - start


def run() -> dict:
  walls, passed = [], 0
  start_s = sandbox_start_s()
  print(json.dumps({"design": "sandbox start only (a unit failing at import)", "wall_s": round(start_s, 2)}),
        flush=True)
  for name, tree in designs():
    start = time.perf_counter()
    report = sandbox.check_design(design_to_json(tree, None, codeunits.sources_for(tree)))
    wall = time.perf_counter() - start
    walls.append(wall)
    passed += report["passed"]
    print(json.dumps({"design": name, "wall_s": round(wall, 2), "passed": report["passed"],
                      "failed": [c["name"] for c in report["checks"] if c["status"] == "fail"]}), flush=True)
  summary = {"summary": True, "code_units": True, "designs": len(walls), "passed": passed,
             "sandbox_start_s": round(start_s, 2),
             "median_wall_s": round(statistics.median(walls), 2), "max_wall_s": round(max(walls), 2)}
  print(json.dumps(summary), flush=True)
  return summary

