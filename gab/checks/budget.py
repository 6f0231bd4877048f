"""Checks 7 and 8: the design fits the rung's parameter budget, and its train step is affordable.

The sizing search (`gab.sizing.fit_to_rung`) traces the design, so it runs where the design was
traced (facts["sizing"]); the parameters of the chosen sizing are counted here, from the shapes
its exported train program takes, and judged against the target.

The efficiency check compiles the train step on the design's exported program ahead of time at the
rung's real shapes (the sized d_model and n_blocks, the rung's context length, its per-device
batch) and compares its FLOPs and memory with the GPT seed's, fitted to the same rung the same
way; it also fails a step that would not fit the rung's memory limit, or the device's memory when
the device reports it. Memory is this compile's; FLOPs are the jaxpr walk's count made where the
design was traced (facts["cost"]: per-unit shares, scan trip counts, constants; the one number
of a verdict the tracing process still reports, until the count is made from the judged program).
Where the FLOP count cannot know the cost (`gab.checks.costs`: while_loops, conds, factorisations,
a loop whose trip count XLA cannot determine in this compile), the step is timed against the GPT
seed's, here, and charged at least its count with each cond at its cheapest branch.
"""

from __future__ import annotations

import dataclasses


from gab import programs as programs_lib
from gab import seeds, sizing, train_step
from gab.checks import costs
from gab.checks.base import FAIL, PASS, WARN, Check
from gab.checks.context import Context
from gab.checks.instrument import where_from
from gab.checks.steps import memory_limit, optimizer
from gab.checks.trace import per_device_batch, sized_init_spec, sized_spec  # noqa: F401 (per_device_batch: the API)
from gab.model import LM
from gab.tree import Unit


def fit(ctx: Context, tree: Unit) -> dict:
  return sizing.fit_to_rung(tree, ctx.rung, ctx.cfg)


def sizing_from_trace(ctx: Context) -> dict:
  """The traced sizing, its parameters recounted here from the exported init of that sizing."""
  s = dict(ctx.facts().get("sizing") or {})
  if s.get("error"):
    raise programs_lib.ProgramError(f"the sizing search failed: {s['error']}")
  if s.get("params") is None:
    return s
  stack = sized_spec(ctx.cfg, ctx.rung, s)
  counted = programs_lib.count(programs_lib.arg_shapes(ctx.ensure_programs(), stack)[0])
  if counted != s["params"]:
    raise programs_lib.ProgramError(f"the traced sizing claims {s['params']:,} parameters, its "
                                    f"program takes {counted:,}")
  target, tol = ctx.rung.target_params, ctx.cfg.size_tolerance
  s["fits"] = bool(target * (1 - tol) <= counted <= target * (1 + tol))
  return s


def check_parameter_budget(ctx: Context) -> Check:
  s = ctx.sizing = sizing_from_trace(ctx)
  rung, tol = ctx.rung, ctx.cfg.size_tolerance
  budget = (f"the target {s['target_params']:,} +-{tol:.0%} (rung d_model={rung.d_model}, "
            f"n_blocks={rung.n_blocks})")
  if s["params"] is None:
    return Check("parameter_budget", FAIL, f"the block cannot be built at any width from "
                 f"{min(ctx.cfg.min_d_model, rung.d_model)} to {rung.d_model}",
                 "choose hyperparameters that divide common widths (multiples of 32)")
  shape = (f"d_model={s['d_model']}, n_blocks={s['n_blocks']}: {s['params']:,} parameters "
           f"({s['ratio']:.2f}x)")
  if s["fits"]:
    return Check("parameter_budget", PASS, f"sized to {shape}, within {budget}")
  more = "many" if s["ratio"] > 1 else "few"
  return Check("parameter_budget", FAIL, f"no sizing is within {budget}; the closest is {shape}, with "
               f"{s['block_params']:,} parameters per block", f"the block has too {more} parameters for "
               f"this rung: {'shrink or remove' if more == 'many' else 'grow or add'} units "
               f"(expansion factors, state sizes) to change its parameters per layer")


def step_cost(ctx: Context, tree: Unit, sized: dict, programs=None) -> costs.StepCost:
  """The train step's cost at the rung's shapes: of `programs`' sized stack (the design), or of the
  Flax model of `tree` (the GPT seed, built in)."""
  opt = optimizer(ctx.cfg.train_lr)
  batch = per_device_batch(ctx.rung)
  if programs is None:
    model = LM(tree, ctx.cfg.vocab_size, sized["d_model"], sized["n_blocks"], dtype=ctx.compute_dtype())
    inner = train_step.make_train_step(model, opt)
  else:
    init = sized_init_spec(ctx.rung, sized)
    model = programs_lib.ExportedLM(programs, sized_spec(ctx.cfg, ctx.rung, sized), ctx.cfg.vocab_size,
                                    init_spec=init if init.key in programs.exported else None)
    inner = train_step.make_train_step(model, opt)
  return costs.measure(tree, lambda state, tokens, scale: inner(state, tokens), model, opt,
                       ctx.rung.seq_len, batch)


def traced_cost(ctx: Context, judged: costs.StepCost) -> costs.StepCost:
  """`judged` (this process's compile of the exported step: its memory, and whether XLA knows its
  loops' trip counts) with the FLOPs, per-unit shares, constants and unknowns the tracing's jaxpr
  walk counted (XLA's own count is no floor: it counts a loop body once and a grouped convolution's
  backward as dense)."""
  reported = ctx.facts().get("cost") or {}
  if reported.get("error"):
    raise programs_lib.ProgramError(f"the train step could not be traced at the rung's shapes: "
                                    f"{reported['error']}")
  paths = lambda rows: {tuple(p) if p is not None else None: v for p, v in rows}  # noqa: E731
  unknown = [(what, where_from(w)) for what, w in reported.get("unknown", [])]
  unknown += [u for u in judged.unknown if u[0] == "while_loop" and u[1] is None and
              not any(what == "while_loop" for what, _ in unknown)]
  constant_bytes = int(reported.get("constant_bytes", 0))
  return dataclasses.replace(
      judged, flops=float(reported.get("flops", 0.0)),
      flops_low=float(reported.get("flops_low", reported.get("flops", 0.0))),
      constant_bytes=constant_bytes, memory_bytes=judged.memory_bytes + constant_bytes,
      unit_flops=paths(reported.get("unit_flops", [])), unit_bytes=paths(reported.get("unit_bytes", [])),
      unknown=unknown)


def _top(cost: costs.StepCost, what: str, tree: Unit) -> str:
  top = cost.top(what)
  if top is None:
    return ""
  path, share = top
  unit = f"{tree.get(path).kind} at {list(path)}"
  if what == "flops":
    return f"; {unit} does {share:.0%} of the FLOPs"
  return f"; {unit} produces {share:.0%} of the bytes of intermediate arrays and constants"


_UNKNOWN = {"while_loop": "the trip count of the while_loop", "cond": "which branch of the cond runs"}


def measured(ctx: Context, mine: costs.StepCost, ref: costs.StepCost) -> tuple[float, str, costs.StepCost]:
  """When the FLOP count cannot know the step's cost (`mine.unknown`): the step timed against the
  GPT seed's, at least the count with every cond at its cheapest branch; (ratio, what the message
  says, `mine` with the unseen FLOPs charged to the unit that hides them)."""
  time_x = costs.timed_ratio(mine, ref, ctx.cfg.seed, ctx.cfg.vocab_size)
  low_x, high_x = mine.flops_low / ref.flops, mine.flops / ref.flops
  what, where = next((u for u in mine.unknown if u[1] is not None), mine.unknown[0])
  place = f" in {where.kind} at {list(where.path)}" if where is not None else ""
  counted = f"{low_x:.2f}x" if low_x == high_x else f"{low_x:.2f}x-{high_x:.2f}x"
  text = (f" (measured: {time_x:.2f}x the GPT seed's step time, compiled as for training, at the "
          f"initial parameters on random tokens, as {_UNKNOWN.get(what, f'what {what} costs')}"
          f"{place} is unknown to the FLOP count, which gives {counted})")
  ratio = max(low_x, time_x)
  unseen = ratio * ref.flops - mine.flops
  if where is not None and unseen > 0:
    table = dict(mine.unit_flops)
    table[where.path] = table.get(where.path, 0.0) + unseen
    mine = dataclasses.replace(mine, unit_flops=table)
  return ratio, text, mine


def check_efficiency(ctx: Context) -> Check:
  cfg, rung = ctx.cfg, ctx.rung
  mine = traced_cost(ctx, step_cost(ctx, ctx.tree, ctx.sizing, ctx.ensure_programs()))
  gpt = seeds.seed("gpt")
  ref = step_cost(ctx, gpt, fit(ctx, gpt))
  flops_x, memory_x = mine.flops / ref.flops, mine.memory_bytes / ref.memory_bytes
  timed = ""
  if mine.unknown:
    flops_x, timed, mine = measured(ctx, mine, ref)
    ctx.sizing.update(timed_vs_gpt=round(flops_x, 3))
  ctx.sizing.update(flops_per_step=mine.flops, memory_bytes=mine.memory_bytes,
                    flops_vs_gpt=round(flops_x, 3), memory_vs_gpt=round(memory_x, 3))
  shapes = (f"d_model={ctx.sizing['d_model']}, n_blocks={ctx.sizing['n_blocks']}, "
            f"seq_len={rung.seq_len}, batch {per_device_batch(rung)} per device")
  flops = (f"{flops_x:.2f}x the GPT seed's FLOPs per train step ({mine.flops:.3g} vs "
           f"{ref.flops:.3g}){timed}")
  constants = f", {mine.constant_bytes / 1e6:.1f} MB of it constants" if mine.constant_bytes > 1e6 else ""
  memory = (f"{memory_x:.2f}x its memory ({mine.memory_bytes / 1e6:.1f} MB{constants} vs "
            f"{ref.memory_bytes / 1e6:.1f} MB)")
  limit, source = memory_limit(ctx)
  if limit is not None and mine.memory_bytes > limit:
    return Check("efficiency", FAIL, f"the train step needs {mine.memory_bytes / 1e9:.3g} GB (temp "
                 f"{mine.temp_bytes / 1e9:.3g}, arguments {mine.argument_bytes / 1e9:.3g}, outputs "
                 f"{mine.output_bytes / 1e9:.3g}, constants {mine.constant_bytes / 1e9:.3g}) at "
                 f"{shapes}, over {source} ({limit / 1e9:.3g} GB)"
                 f"{_top(mine, 'bytes', ctx.tree)}",
                 "cut activation memory: avoid materialising [L, L] or per-head [d, d] tensors per "
                 "position, chunk long scans, shrink expansion factors")
  hint = "cut redundant computation: per-token cost should stay near a transformer block's"
  bounds = ((flops_x, cfg.flops_warn_ratio, cfg.flops_fail_ratio, "flops"),
            (memory_x, cfg.memory_warn_ratio, cfg.memory_fail_ratio, "bytes"))
  verdicts = [(FAIL if ratio > fail else WARN, what, warn, fail)
              for ratio, warn, fail, what in bounds if ratio > warn]
  if verdicts:
    status, what, warn, fail = min(verdicts, key=lambda v: v[0] != FAIL)
    return Check("efficiency", status, f"{flops}, {memory} at {shapes} ({what}: warn above {warn:g}x, "
                 f"fail above {fail:g}x){_top(mine, what, ctx.tree)}", hint)
  bound = source if limit is None else f"within {source} ({limit / 1e9:.3g} GB)"
  return Check("efficiency", PASS, f"{flops}, {memory} at {shapes}; {bound}")
