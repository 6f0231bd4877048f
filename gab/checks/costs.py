"""The cost of one train step of a design at a rung's real shapes, compiled ahead of time.

`measure` traces the step (value_and_grad of the LM loss and an AdamW update, the same step the
checks train with), lowers it with abstract arguments (`jax.ShapeDtypeStruct`, nothing is
allocated) and compiles it: XLA's `cost_analysis()` gives the FLOPs and `memory_analysis()` the bytes
(temporaries + arguments + outputs, the donated train state counted once, as the trainer donates
it). XLA counts a loop body once, whatever its trip count, and counts the backward of a grouped
(depthwise) convolution as if it were dense; the FLOPs used are therefore the jaxpr walk's below:
matmuls and convolutions exactly (per feature group), elementwise ops and reductions one FLOP per
element, everything multiplied by scan lengths. A while_loop's trip count is unknown statically:
`while_loops` lists them, and the efficiency check then times the compiled step against the GPT
seed's instead. The walk also
attributes FLOPs and the bytes of the arrays produced to the units of the tree (by JAX name stacks),
so a verdict can say which unit is expensive. Results are cached per process.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from gab.checks.base import compile_options
from gab.checks.probe import locate_name_stack
from gab.model import LM
from gab.programs import ExportedLM
from gab.tree import Path, Unit


@dataclasses.dataclass
class StepCost:
  flops: float                  # per train step: the jaxpr's count (matmuls, convs, elementwise)
  xla_flops: float
  memory_bytes: int             # temp + argument + output - aliased (donated) bytes
  temp_bytes: int
  argument_bytes: int
  output_bytes: int
  unit_flops: dict[Path, float]  # matmul/conv FLOPs per unit path, summed over blocks
  unit_bytes: dict[Path, float]  # bytes of the arrays each unit produces, forward and backward
  while_loops: list = dataclasses.field(default_factory=list)  # Locations of while_loops
  compiled: Any = None          # the compiled step, its abstract state and tokens (for timing)
  state: Any = None
  tokens: Any = None

  def seconds_per_step(self, repeats: int = 3) -> float:
    """Median wall time of the compiled step on zeros (donated state: a fresh one each run)."""
    import time  # pylint: disable=g-import-not-at-top
    times = []
    for _ in range(repeats + 1):
      state = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), self.state)
      tokens = jnp.zeros(self.tokens.shape, self.tokens.dtype)
      scale = jnp.ones((), jnp.float32)
      jax.block_until_ready(state)
      start = time.perf_counter()
      jax.block_until_ready(self.compiled(state, tokens, scale))
      times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]

  def top(self, what: str) -> tuple[Path, float] | None:
    """The unit with the largest share of `flops` or `bytes`, and that share."""
    table = self.unit_flops if what == "flops" else self.unit_bytes
    total = sum(table.values())
    units = {p: v for p, v in table.items() if p is not None}
    if not units or total <= 0:
      return None
    path = max(units, key=units.get)
    return path, units[path] / total


_CACHE: dict[tuple, StepCost] = {}


def measure(tree: Unit, step_fn, model: LM, optimizer, seq_len: int, batch: int,
            walk_only: bool = False) -> StepCost:
  """Compile `step_fn(state, tokens, input_scale)` for `model` (an LM, or a `gab.programs.ExportedLM`)
  at [batch, seq_len]; with `walk_only`, only trace it and count (no memory, no compiled step)."""
  key = (tree.content_hash(), type(model).__name__, model.vocab_size, model.d_model, model.n_blocks,
         seq_len, batch, str(model.dtype), walk_only)
  if key in _CACHE:
    return _CACHE[key]
  from gab.checks.training import initial_state  # pylint: disable=g-import-not-at-top
  params = (model.param_shapes() if isinstance(model, ExportedLM) else
            jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, seq_len), jnp.int32)))
  state = jax.eval_shape(lambda p: initial_state(p, optimizer), params)
  tokens = jax.ShapeDtypeStruct((batch, seq_len + 1), jnp.int32)
  scale = jax.ShapeDtypeStruct((), jnp.float32)
  traced = jax.jit(step_fn, donate_argnums=(0,)).trace(state, tokens, scale)
  unit_flops, unit_bytes = collections.defaultdict(float), collections.defaultdict(float)
  loops: list[str] = []
  _walk(traced.jaxpr.jaxpr, "", 1, tree, unit_flops, unit_bytes, loops)
  compiled, xla_flops, memory = None, 0.0, None
  if not walk_only:
    compiled = traced.lower().compile(compile_options())
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla_flops = float(analysis.get("flops", 0.0))
    memory = compiled.memory_analysis()
  nbytes = lambda name: int(getattr(memory, name)) if memory is not None else 0  # noqa: E731
  cost = StepCost(
      flops=sum(unit_flops.values()), xla_flops=xla_flops,
      memory_bytes=(nbytes("temp_size_in_bytes") + nbytes("argument_size_in_bytes")
                    + nbytes("output_size_in_bytes") - nbytes("alias_size_in_bytes")),
      temp_bytes=nbytes("temp_size_in_bytes"), argument_bytes=nbytes("argument_size_in_bytes"),
      output_bytes=nbytes("output_size_in_bytes"), unit_flops=dict(unit_flops),
      unit_bytes=dict(unit_bytes), while_loops=[locate_name_stack(x, tree) for x in loops],
      compiled=compiled, state=state, tokens=tokens)
  _CACHE[key] = cost
  return cost


def has_unknown_trip_count(compiled) -> bool:
  """Whether a compiled program has a loop whose trip count XLA could not determine (its HLO
  `while` carries no known_trip_count): a cost XLA's count cannot see."""
  return any(" while(" in line and "known_trip_count" not in line
             for line in compiled.as_text().splitlines())


def _eqn_flops(eqn) -> float:
  out = eqn.outvars[0].aval
  if eqn.primitive.name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    return 2.0 * math.prod(out.shape) * math.prod(lhs.shape[i] for i in lhs_contract)
  if eqn.primitive.name == "conv_general_dilated":
    rhs = eqn.invars[1].aval
    out_features = rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * math.prod(out.shape) * math.prod(rhs.shape) / max(out_features, 1)
  return 0.0


def _sub_jaxprs(params: dict[str, Any]):
  for value in params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr


# Primitives that only move or relabel data: no arithmetic.
_MOVES = {"reshape", "broadcast_in_dim", "transpose", "slice", "dynamic_slice", "dynamic_update_slice",
          "concatenate", "pad", "gather", "scatter", "squeeze", "expand_dims", "convert_element_type",
          "copy", "copy_p", "rev", "iota", "select_n", "stop_gradient", "pjit", "device_put",
          "broadcast", "bitcast_convert_type", "split", "random_bits", "random_wrap", "random_unwrap",
          "random_seed", "threefry2x32", "sharding_constraint"}


def _arith_flops(eqn) -> float:
  """1 FLOP per output element of an elementwise op, per input element of a reduction."""
  name = eqn.primitive.name
  if name in _MOVES or not eqn.outvars:
    return 0.0
  sizes = [math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars]
  if name.startswith("reduce_") or name in ("argmax", "argmin", "cumsum", "cumprod", "cummax",
                                              "cumlogsumexp"):
    sizes = [math.prod(getattr(v.aval, "shape", ())) for v in eqn.invars if hasattr(v, "aval")]
  return float(sum(sizes))


def _walk(jaxpr, prefix: str, mult: float, tree: Unit, flops: dict, nbytes: dict,
          loops: list | None = None) -> None:
  for eqn in jaxpr.eqns:
    stack = f"{prefix}/{eqn.source_info.name_stack}"
    subs = list(_sub_jaxprs(eqn.params))
    if subs:
      if eqn.primitive.name == "while" and loops is not None:
        loops.append(stack)  # its trip count is unknown here: the body is counted once
      inner = mult * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
      for sub in subs:
        _walk(sub, stack, inner, tree, flops, nbytes, loops)
      continue
    where = locate_name_stack(stack, tree)
    path = where.path if where else None
    flops[path] += mult * (_eqn_flops(eqn) or _arith_flops(eqn))
    nbytes[path] += mult * sum(_nbytes(v.aval) for v in eqn.outvars)


def _nbytes(aval) -> int:
  try:
    return math.prod(aval.shape) * aval.dtype.itemsize
  except (AttributeError, TypeError):
    return 0
