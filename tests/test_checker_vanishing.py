"""Issue 24, item 10: a norm scale inside a `Gate` with an identically zero gradient.

The default run rejected two proposals for it. It is not a cut path: the Gate multiplies the norm's
output by a chain of unnormalised small activations (an MLP fed the raw stream, retention of that,
an MLP of that: ~1e-53 here), below float32's range, so the gradient is exactly zero in the arithmetic
the design trains in, and nonzero once the embeddings are scaled up. The checker still rejects it
(float32 training would never move those parameters) but says that the signal vanishes, apart from
parameters that nothing depends on (tests/test_checker_adversarial.py's DeadParameter).
"""

import jax
import numpy as np

from gab import checker, registry
from gab.checks.context import Context
from gab.checks.structure import check_format, check_init
from gab.checks.training import _failing, check_differentiability, training_run
from gab.tree import Unit

U = Unit.make


def _gate_over_a_vanishing_chain() -> Unit:
  attention = U("Residual", [U("Sequence", [U("RMSNorm"), U("Attention", n_heads=4)])])
  chain = U("Sequence", [U("MultiScaleRetention", n_heads=1, value_factor=1, chunk_size=64, rope=True),
                         U("RetNetMLP", hidden_ratio=4, multiple_of=256)])
  gated = U("Residual", [U("Sequence", [U("GatedMLP"), U("Gate", [U("RMSNorm"), chain],
                                                                activation="identity")])])
  return registry.check_types(U("Sequence", [attention, gated]))


def test_a_gates_norm_scale_underflows_and_the_message_says_so():
  cfg = checker.complete_config(None)
  ctx = Context(_gate_over_a_vanishing_chain(), cfg, checker.resolve_rung(None, cfg))
  assert check_format(ctx).status == "pass" and check_init(ctx).status == "pass"
  result = check_differentiability(ctx)
  assert result.status == "fail"
  assert "underflows to exactly zero in float32 over 10 training steps" in result.message
  assert "nonzero with the embeddings scaled x100" in result.message
  dead = _failing(training_run(ctx)["grad_nonzero"], ctx.tree)
  assert any(d.startswith("RMSNorm at [1, 0, 1, 0] (blocks 0, 1), parameter scale") for d in dead), dead
  # The same parameters at 100x the embeddings: every one of them gets a gradient.
  _, stats = ctx.train_step(training_run(ctx)["initial_state"], ctx.tokens, 100.0)
  flags = jax.tree_util.tree_leaves(jax.device_get(stats["grad_nonzero"]))
  assert all(np.asarray(flags)), _failing(jax.device_get(stats["grad_nonzero"]), ctx.tree)
