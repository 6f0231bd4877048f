"""Checks 7 and 8: the design fits the rung's parameter budget, and its train step is affordable.

The efficiency check compiles the train step ahead of time at the rung's real shapes (the sized
d_model and n_blocks, the rung's context length, its per-device batch) and compares its FLOPs and
memory with the GPT seed's, fitted to the same rung the same way; it also fails a step that would
not fit the rung's memory limit, or the device's memory when the device reports it. Where the
FLOP count cannot know the cost (`gab.checks.costs`: while_loops, conds, factorisations), the step
is timed against the GPT seed's and charged at least its count with each cond at its cheapest
branch.
"""

from __future__ import annotations

import dataclasses

import jax

from gab import seeds, sizing
from gab.checks import costs
from gab.checks.base import FAIL, PASS, WARN, Check
from gab.checks.context import Context
from gab.checks.steps import make_train_step, memory_limit, optimizer
from gab.model import LM
from gab.tree import Unit


def per_device_batch(rung) -> int:
  """The micro-batch one device holds: the rung's global batch over devices and accumulation."""
  return max(1, rung.batch_size // (jax.device_count() * int(rung.get("grad_accum", 1))))


def fit(ctx: Context, tree: Unit) -> dict:
  return sizing.fit_to_rung(tree, ctx.rung, ctx.cfg)


def check_parameter_budget(ctx: Context) -> Check:
  s = ctx.sizing = fit(ctx, ctx.tree)
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


def step_cost(ctx: Context, tree: Unit, sized: dict) -> costs.StepCost:
  model = LM(tree, ctx.cfg.vocab_size, sized["d_model"], sized["n_blocks"], dtype=ctx.compute_dtype())
  opt = optimizer(ctx.cfg.train_lr)
  batch = per_device_batch(ctx.rung)
  return costs.measure(tree, make_train_step(model, opt, tree), model, opt, ctx.rung.seq_len, batch)


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
  mine = step_cost(ctx, ctx.tree, ctx.sizing)
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
