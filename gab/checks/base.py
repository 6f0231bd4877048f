"""What every check returns, and the report that collects them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax

PASS, WARN, FAIL = "pass", "warn", "fail"

# The checks compile many small programs and run them a few times: on a CPU, LLVM's optimisations
# and the fusion emitters cost more time than they save (about 3x less compile time without them).
FAST_CPU_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                    "xla_cpu_use_fusion_emitters": False}


def compile_options() -> dict:
  return FAST_CPU_COMPILE if jax.default_backend() == "cpu" else {}


@dataclasses.dataclass
class Check:
  """One check's verdict; `message` says what was found (and where), `hint` how to repair it."""
  name: str
  status: str
  message: str
  hint: str = ""


@dataclasses.dataclass
class Report:
  checks: list[Check]
  sizing: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def passed(self) -> bool:
    return all(c.status != FAIL for c in self.checks)

  def failed(self) -> list[Check]:
    return [c for c in self.checks if c.status == FAIL]

  def warnings(self) -> list[Check]:
    return [c for c in self.checks if c.status == WARN]

  def to_dict(self) -> dict[str, Any]:
    return {"passed": self.passed, "checks": [dataclasses.asdict(c) for c in self.checks],
            "sizing": self.sizing}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  def summary(self) -> str:
    bad = self.failed()
    return "passed" if not bad else "; ".join(f"{c.name}: {c.message}" for c in bad)


def one_line(e: BaseException) -> str:
  """`Type: first line of the message`, short enough for a report."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def on_device(tree):
  """`tree` committed to the default device, as every jitted program's outputs are: a program then
  compiles once, not again for arguments that are host arrays or uncommitted."""
  return jax.device_put(tree, jax.devices()[0])


def jit(fn, **kwargs):
  """`jax.jit` compiling for speed of compilation, as every check's programs are tiny."""
  return jax.jit(fn, compiler_options=compile_options(), **kwargs)
