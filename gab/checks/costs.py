"""The cost of one train step of a design at a rung's real shapes, compiled ahead of time.

`measure` traces the step (value_and_grad of the LM loss and an AdamW update, the same step the
checks train with), lowers it with abstract arguments (`jax.ShapeDtypeStruct`, nothing is
allocated) and compiles it: XLA's `cost_analysis()` gives the FLOPs and `memory_analysis()` the bytes
(temporaries + arguments + outputs, the donated train state counted once, as the trainer donates
it), to which the constants baked into the program are added (XLA embeds them in the executable
and counts them nowhere). XLA counts a loop body once, whatever its trip count, and counts the
backward of a grouped (depthwise) convolution as if it were dense; the FLOPs used are therefore the
jaxpr walk's below (`gab.checks.flop_rules` per equation), everything multiplied by scan lengths,
each `cond`/`switch` at its most expensive branch (`flops`) and at its cheapest (`flops_low`).

What the walk cannot know is listed in `unknown`: a while_loop's trip count, which branch of a cond
runs, what a factorisation, FFT or sort costs on the device; the efficiency check then times the
real step against the GPT seed's (`timed_ratio`): compiled as the trainer compiles it, at the
initial parameters and on random tokens, interleaved so that machine load weighs on both alike.
The walk also attributes FLOPs and the bytes of the arrays produced (and of the constants) to the
units of the tree (by JAX name stacks), so a verdict can say which unit is expensive. The last few
results are cached per process.

A design judged on its exported programs (`gab.programs.ExportedLM`) is one opaque call to this
walk: its count, per-unit shares, constants and `unknown` list are the walk's in the process that
traced it (`gab.checks.trace`, facts["cost"]); the judging compile gives the memory, and a loop
whose trip count XLA cannot determine there (`has_unknown_trip_count`) is timed.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gab.checks.base import compile_options, jit
from gab.checks.flop_rules import ESTIMATED, eqn_flops
from gab.checks.probe import locate_name_stack
from gab.checks.steps import initial_state
from gab.model import LM
from gab.programs import ExportedLM
from gab.tree import Path, Unit


@dataclasses.dataclass
class StepCost:
  flops: float                  # per train step: the jaxpr's count, each cond at its dearest branch
  flops_low: float              # the same with each cond at its cheapest branch
  xla_flops: float
  memory_bytes: int             # temp + argument + output - aliased (donated) + constant bytes
  temp_bytes: int
  argument_bytes: int
  output_bytes: int
  constant_bytes: int           # arrays baked into the program (closed-over numpy/JAX arrays)
  unit_flops: dict[Path, float]  # FLOPs per unit path, summed over blocks
  unit_bytes: dict[Path, float]  # bytes of the arrays each unit produces (and of its constants)
  unknown: list = dataclasses.field(default_factory=list)  # (what, Location | None): timed instead
  timing: Any = None            # (traced step, model, optimizer, tokens' shape): to run it for real
  _timed: Any = None            # its compiled program, initial state and tokens, made once

  def top(self, what: str) -> tuple[Path, float] | None:
    """The unit with the largest share of `flops` or `bytes`, and that share."""
    table = self.unit_flops if what == "flops" else self.unit_bytes
    total = sum(table.values())
    units = {p: v for p, v in table.items() if p is not None}
    if not units or total <= 0:
      return None
    path = max(units, key=units.get)
    return path, units[path] / total

  def runner(self, seed: int, vocab_size: int):
    """`run() -> seconds` of one step, compiled with the trainer's (default) compile options, from
    the initial parameters (a fresh copy each run: the state is donated) on random tokens."""
    if self._timed is None:
      traced, model, opt, shape = self.timing
      tokens = np.random.default_rng(seed).integers(3, vocab_size, shape).astype(np.int32)
      if isinstance(model, ExportedLM) and model.init_spec is None:  # no init exported: zeros
        params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), model.param_shapes())
      else:
        params = jit(model.init)(jax.random.key(seed), tokens[:, :-1])
      self._timed = (traced.lower().compile(), initial_state(params, opt), jnp.asarray(tokens))
    compiled, state, tokens = self._timed
    scale = jnp.ones((), jnp.float32)

    def run() -> float:
      fresh = jax.block_until_ready(jax.tree.map(jnp.copy, state))
      start = time.perf_counter()
      jax.block_until_ready(compiled(fresh, tokens, scale))
      return time.perf_counter() - start
    return run


def timed_ratio(mine: StepCost, ref: StepCost, seed: int, vocab_size: int, min_pairs: int = 5,
                min_seconds: float = 2.0, max_pairs: int = 50) -> float:
  """Mine's step time over ref's: the fastest run of each, over interleaved pairs of runs (a first
  pair warms up; then at least `min_pairs`, and more while under `min_seconds`). Other work on the
  machine only ever adds time, so the fastest runs are the ones it disturbed least, and
  interleaving exposes both to the same spells of load."""
  a, b = mine.runner(seed, vocab_size), ref.runner(seed, vocab_size)
  a(), b()
  times, start = [], time.perf_counter()
  while len(times) < min_pairs or (time.perf_counter() - start < min_seconds and len(times) < max_pairs):
    times.append((a(), b()))
  return min(t for t, _ in times) / max(min(t for _, t in times), 1e-9)


# The last few steps measured (the GPT seed's at each rung is the one asked for again and again);
# each holds its traced program and, once timed, its executable and state.
_CACHE: collections.OrderedDict[tuple, StepCost] = collections.OrderedDict()
_CACHE_SIZE = 8


def _abstract_state(model, optimizer, seq_len: int):
  params = (model.param_shapes() if isinstance(model, ExportedLM) else
            jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, seq_len), jnp.int32)))
  return jax.eval_shape(lambda p: initial_state(p, optimizer), params)


def measure(tree: Unit, step_fn, model: LM, optimizer, seq_len: int, batch: int,
            walk_only: bool = False) -> StepCost:
  """Compile `step_fn(state, tokens, input_scale)` for `model` (an LM, or a `gab.programs.ExportedLM`)
  at [batch, seq_len]; with `walk_only`, only trace it and count (no memory, no compiled step)."""
  key = (tree.content_hash(), type(model).__name__, model.vocab_size, model.d_model, model.n_blocks,
         seq_len, batch, str(model.dtype), walk_only)
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  state = _abstract_state(model, optimizer, seq_len)
  tokens = jax.ShapeDtypeStruct((batch, seq_len + 1), jnp.int32)
  scale = jax.ShapeDtypeStruct((), jnp.float32)
  traced = jax.jit(step_fn, donate_argnums=(0,)).trace(state, tokens, scale)
  high, low = Walk(tree, max), Walk(tree, min)
  for walk in (high, low):
    walk.closed(traced.jaxpr, "", 1.0)
  constant_bytes = int(sum(high.constants.values()))
  xla_flops, memory = 0.0, None
  if not walk_only:
    compiled = traced.lower().compile(compile_options())
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla_flops = float(analysis.get("flops", 0.0))
    memory = compiled.memory_analysis()
    if has_unknown_trip_count(compiled) and not any(w == "while_loop" for w, _ in high.unknown):
      high.unknown.append(("while_loop", ""))  # inside a program the walk cannot see into
  nbytes = lambda name: int(getattr(memory, name)) if memory is not None else 0  # noqa: E731
  cost = StepCost(
      flops=sum(high.flops.values()), flops_low=sum(low.flops.values()), xla_flops=xla_flops,
      memory_bytes=(nbytes("temp_size_in_bytes") + nbytes("argument_size_in_bytes")
                    + nbytes("output_size_in_bytes") - nbytes("alias_size_in_bytes")) + constant_bytes,
      temp_bytes=nbytes("temp_size_in_bytes"), argument_bytes=nbytes("argument_size_in_bytes"),
      output_bytes=nbytes("output_size_in_bytes"), constant_bytes=constant_bytes,
      unit_flops=dict(high.flops), unit_bytes=dict(high.nbytes),
      unknown=[(what, locate_name_stack(stack, tree) if stack else None) for what, stack in high.unknown],
      timing=(traced, model, optimizer, tokens.shape))
  _CACHE[key] = cost
  while len(_CACHE) > _CACHE_SIZE:
    _CACHE.popitem(last=False)
  return cost


def has_unknown_trip_count(compiled) -> bool:
  """Whether a compiled program has a loop whose trip count XLA could not determine (its HLO
  `while` carries no known_trip_count): a cost no static count can see."""
  return any(" while(" in line and "known_trip_count" not in line
             for line in compiled.as_text().splitlines())


class Walk:
  """One walk over a step's jaxpr: FLOPs, bytes produced and constant bytes per unit path, and the
  ops whose cost it cannot know; each cond counted at the branch `pick` (max or min) chooses."""

  def __init__(self, tree: Unit, pick):
    self.tree, self.pick = tree, pick
    self.flops: dict = collections.defaultdict(float)
    self.nbytes: dict = collections.defaultdict(float)
    self.constants: dict[int, int] = {}  # id(array) -> bytes: a constant shared by programs once
    self.unknown: list[tuple[str, str]] = []

  def _path(self, stack: str) -> Path | None:
    where = locate_name_stack(stack, self.tree)
    return where.path if where else None

  def closed(self, closed_jaxpr, prefix: str, mult: float) -> None:
    """A ClosedJaxpr: its constants charged to the unit of the first equation that reads each."""
    jaxpr = closed_jaxpr.jaxpr
    readers = {}
    for eqn in jaxpr.eqns:
      for v in eqn.invars:
        if not hasattr(v, "val") and v not in readers:
          readers[v] = f"{prefix}/{eqn.source_info.name_stack}"
    for var, value in zip(jaxpr.constvars, closed_jaxpr.consts):
      size = int(getattr(value, "nbytes", 0) or 0)
      if size and id(value) not in self.constants:
        self.constants[id(value)] = size
        self.nbytes[self._path(readers.get(var, prefix))] += size
    self.jaxpr(jaxpr, prefix, mult)

  def _sub(self, item, stack: str, mult: float) -> None:
    if hasattr(item, "consts") and hasattr(item, "jaxpr"):
      self.closed(item, stack, mult)
    else:
      self.jaxpr(item, stack, mult)

  def jaxpr(self, jaxpr, prefix: str, mult: float) -> None:
    for eqn in jaxpr.eqns:
      stack = f"{prefix}/{eqn.source_info.name_stack}"
      name = eqn.primitive.name
      if name == "cond":
        self._cond(eqn, stack, mult)
        continue
      subs = list(_sub_jaxprs(eqn.params))
      if subs:
        if name == "while":
          self.unknown.append(("while_loop", stack))  # its trip count: the body is counted once
        inner = mult * (eqn.params.get("length", 1) if name == "scan" else 1)
        for sub in subs:
          self._sub(sub, stack, inner)
        continue
      if name in ESTIMATED:
        self.unknown.append((name, stack))
      path = self._path(stack)
      self.flops[path] += mult * eqn_flops(eqn)
      self.nbytes[path] += mult * sum(_nbytes(v.aval) for v in eqn.outvars)

  def _cond(self, eqn, stack: str, mult: float) -> None:
    """Each branch walked apart; the one `pick` chooses (by total FLOPs) is kept."""
    walks = []
    for branch in eqn.params["branches"]:
      walk = Walk(self.tree, self.pick)
      walk.constants = dict(self.constants)
      walk.closed(branch, stack, mult)
      walks.append(walk)
    chosen = self.pick(walks, key=lambda w: sum(w.flops.values()))
    if len({round(sum(w.flops.values())) for w in walks}) > 1:
      self.unknown.append(("cond", stack))  # which branch runs is known only at run time
    for table, part in ((self.flops, chosen.flops), (self.nbytes, chosen.nbytes)):
      for path, value in part.items():
        table[path] += value
    self.constants.update(chosen.constants)
    self.unknown += chosen.unknown


def _sub_jaxprs(params: dict[str, Any]):
  """The sub-programs of an equation: Jaxprs and ClosedJaxprs (constants kept)."""
  for value in params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if hasattr(item, "eqns") or (hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns")):
        yield item


def _nbytes(aval) -> int:
  try:
    return math.prod(aval.shape) * aval.dtype.itemsize
  except (AttributeError, TypeError):
    return 0
