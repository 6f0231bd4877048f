"""The checker's checks, one module per group; `gab.checker.check` runs them in order.

  base        Check, Report, statuses, the fast-compiling jit the checks use
  context     what one check call shares between its checks (models per dtype, trained params)
  timeout     one check under a wall-clock limit
  probe       unit-level instrumentation: locations, contract checks (incl. in-place Z mutation)
  zrule       the one Z read-before-write rule (shared with evolution.typing_rules)
  zflow       undeclared Z reads by any route, found by exact zero gradients
  mixing      input dependence of the logits; sequence mixers that really mix
  structure   format, init, forward (and numerics in the compute dtype)
  structural  exact zero-gradient tests of causality and batch independence, any Z layout
  plan        the lengths, batch sizes and split points of the structural tests
  causality   causality: structural tests, token replacement, row-alone and prefix consistency
  training    the trainer's train step; differentiability, stability, effectiveness
  costs       ahead-of-time cost of a train step (FLOPs from the jaxpr, memory, per-unit shares)
  budget      parameter_budget (via gab.sizing), efficiency
"""
