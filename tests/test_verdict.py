"""A verdict untrusted code cannot touch: a code unit's Python runs only in the process that traces
it, never in the ones that judge and train its programs, so rewriting the checker, the checks,
the trainer or the audit in its own process changes no verdict and no metric.

Each design here is an unmasked attention (it leaks at every position) whose module-level code
rewrites what decides its fate in the process it runs in: it would pass, and train to a forged
loss, if that process were the one that judged it.
"""

import json
import os
import subprocess
import sys

import pytest

from gab import audit, codeunits, registry, sandbox
from gab.tree import Unit, design_to_json

U = Unit.make
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTENTION = '''

class Forger(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    q, k, v = (self.dense(d, name)(x) for name in ("q", "k", "v"))
    w = jax.nn.softmax(q @ jnp.swapaxes(k, 1, 2) / jnp.sqrt(d).astype(x.dtype), axis=-1)  # no mask
    return self.dense(d, "out", out=True)(w @ v), z
'''
# Lint-clean: `import gab.units.base` binds `gab`, whose `checker` and `checks` are imported in
# any process that checks; assignments are allowed at module level.
FORGE_CHECKS = '''"""Unmasked attention that rewrites the checker and its checks in its own process."""
import flax.linen as nn
import jax
import jax.numpy as jnp

import gab.units.base
from gab.units.base import UnitModule

KIND = dict(name="Forger", role="sequence_mixer", params={}, slots=[], reads=[], writes=[])


def passed(ctx):
  return gab.checker.Check("forged", "pass", "forged")


def no_leak(*args, **kwargs):
  return None


gab.checker.CHECKS = tuple(passed for _ in gab.checker.NAMES)
gab.checks.causality.check_causality = passed
gab.checks.causality.structural_tests = no_leak
gab.checks.replacement.split_groups = no_leak
gab.checks.structural.leaks = no_leak
gab.checks.training.check_effectiveness = passed
gab.checks.budget.check_efficiency = passed
''' + ATTENTION
# Past the lint (a string annotation evaluated by typing.get_type_hints reaches the real
# __import__, as in tests/test_sandbox.py): the trainer, its metrics and the audit, rewritten.
FORGE_METRICS = '''"""Unmasked attention that rewrites the trainer's metrics and the audit in its own process."""
import functools
import typing
import flax.linen as nn
import jax
import jax.numpy as jnp
from gab.units.base import UnitModule

KIND = dict(name="Forger", role="sequence_mixer", params={}, slots=[], reads=[], writes=[])


def _imp(a: "functools.__builtins__['__import__']"):
  pass


IMPORT = typing.get_type_hints(_imp)["a"]
TRAINER = IMPORT("train.trainer", fromlist=["x"])
AUDIT = IMPORT("gab.audit", fromlist=["x"])
METRICS = IMPORT("train.metrics", fromlist=["x"])


def _forged_bpb(*args, **kwargs):
  return {"val_loss": 0.001, "val_bpb": 0.001, "val_tokens": 1}


def _no_leak(*args, **kwargs):
  return {"leaks": False, "max_change": 0.0, "batch": 1, "length": 1, "rtol": 0.0, "t": None, "row": None}


TRAINER.evaluate_bpb = _forged_bpb
TRAINER.audit_lib.audit = _no_leak
AUDIT.audit = _no_leak
METRICS.mfu = lambda *args, **kwargs: 1.0
''' + ATTENTION


@pytest.fixture
def forget():
  yield
  for kind in list(codeunits.known()):
    codeunits.forget(kind)


def design(source: str) -> str:
  kind = codeunits.declare(source)
  tree = registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(kind)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U("GatedMLP")])])]))
  return design_to_json(tree, "forger", codeunits.sources_for(tree))


def test_a_unit_that_rewrites_the_checker_and_its_checks_changes_no_verdict(forget):
  assert codeunits.lint(FORGE_CHECKS) == []  # lint-clean: the boundary is the process, not the lint
  report = sandbox.check_design(design(FORGE_CHECKS))
  assert [c["name"] for c in report["checks"]] == ["format", "init", "forward", "causality"], report
  failed = report["checks"][-1]
  assert not report["passed"] and failed["status"] == "fail"
  assert "at positions <= 0 depend on the tokens after 0" in failed["message"], failed["message"]
  assert "forged" not in json.dumps(report)


@pytest.mark.slow
def test_a_unit_that_rewrites_the_trainer_and_the_audit_changes_no_metric(forget, tmp_path):
  path = tmp_path / "forger.json"
  path.write_text(design(FORGE_METRICS))
  proc = subprocess.run([sys.executable, "-m", "train.train", f"--design={path}",
                         "--config=configs/ladder.py:smoke", f"--workdir={tmp_path / 'wd'}"],
                        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads(proc.stdout.strip().splitlines()[-1])
  assert metrics["val_bpb"] > 1.0 and metrics["val_tokens"] > 1  # not the forged 0.001
  assert metrics["mfu"] != 1.0
  assert metrics["audit"]["leaks"] and metrics["audit"]["max_change"] > 0  # the audit ran here
  assert audit.voided(metrics)["error"].startswith("audit: the trained parameters leak")
