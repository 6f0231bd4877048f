"""The checker's checks, one module per group; `gab.checker.check` runs them in order.

  base        Check, Report, statuses, the fast-compiling jit the checks use
  context     what one check call shares between its checks
  probe       unit-level instrumentation: locations, contract checks, recorders
  structure   format, init, forward
  causality   causality (and locating the leak)
  training    the shared train step; differentiability, stability, effectiveness
  costs       ahead-of-time cost of a train step (FLOPs, memory, per-unit shares)
  budget      parameter_budget (via gab.sizing), efficiency
"""
