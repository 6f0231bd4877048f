"""Size a design to a rung's parameter budget by choosing its d_model and n_blocks.

As the original Genesys checker does, start from the rung's d_model and n_blocks and walk:
too few parameters -> add a block; too many -> shrink d_model, else remove a block. Widths stay
multiples of `d_multiple` and at least `min_d_model` (or the rung's own width, if that is smaller);
a shrink goes straight to the widest allowed width the quadratic estimate `d * sqrt(upper / params)`
allows, so large rungs need few steps. When the walk cannot land inside the tolerance (it revisits a
sizing, or runs out of moves), every (width, blocks) pair up to the rung's width is tried, and the
fitting one closest to the rung's shape wins; failing that, the result is the closest miss.

Parameters are counted without initialising anything: `jax.eval_shape` of one block at each width
(every block of an LM has the same parameters), plus the LM's embedding and final norm.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from gab import registry
from gab.model import GAB, initial_z
from gab.tree import Unit


@functools.lru_cache(maxsize=4096)
def block_params(tree: Unit, d_model: int, seq_len: int = 128) -> int | None:
  """Parameters of one block of `tree` at width `d_model`; None if the block cannot be built there."""
  x = jax.ShapeDtypeStruct((1, seq_len, d_model), jnp.float32)
  z = initial_z(jnp.zeros((1, seq_len), jnp.int32))
  try:
    shapes = jax.eval_shape(lambda x_BxLxD: GAB(tree).init(jax.random.key(0), x_BxLxD, z), x)
  except Exception:  # noqa: BLE001 - a width the design's hyperparameters do not fit
    return None
  return int(sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)))


def lm_params(tree: Unit, vocab_size: int, d_model: int, n_blocks: int,
              seq_len: int = 128) -> int | None:
  """Parameters of `gab.model.LM(tree, vocab_size, d_model, n_blocks)`: embedding, blocks, final norm."""
  per_block = block_params(registry.normalize(tree), d_model, seq_len)
  return None if per_block is None else vocab_size * d_model + d_model + n_blocks * per_block


def fit(tree: Unit, target_params: int, d_model: int, n_blocks: int, vocab_size: int,
        tolerance: float = 0.2, *, min_d_model: int = 64, d_multiple: int = 32, seq_len: int = 128,
        max_blocks: int | None = None) -> dict[str, Any]:
  """The sizing of `tree` closest to the rung's shape within `target_params` (1 +- tolerance).

  Returns {"d_model", "n_blocks", "params", "target_params", "ratio", "tolerance", "fits",
  "block_params"}; when nothing fits, "fits" is False and the rest describe the closest miss
  ("params" is None if the block cannot be built at any allowed width).
  """
  lo, hi = target_params * (1 - tolerance), target_params * (1 + tolerance)
  floor = min(min_d_model, d_model)
  max_blocks = max_blocks or 4 * n_blocks + 8
  count = functools.partial(lm_params, tree, vocab_size, seq_len=seq_len)
  seen: dict[tuple[int, int], int | None] = {}

  def narrower(d: int, params: int | None) -> int | None:
    shrink = 0.5 if params is None else math.sqrt(hi / params)
    new = max(floor, int(d * shrink) // d_multiple * d_multiple)
    new = min(new, (d - 1) // d_multiple * d_multiple)
    return new if new >= floor else None

  d, n = d_model, n_blocks
  while (d, n) not in seen:
    params = seen[(d, n)] = count(d, n)
    if params is not None and lo <= params <= hi:
      return _result(tree, d, n, params, target_params, tolerance, True, seq_len)
    if params is not None and params < lo:
      if n >= max_blocks:
        break
      n += 1
    elif (new := narrower(d, params)) is not None:
      d = new
    elif n > 1:
      n -= 1
    else:
      break

  widths = sorted({d_model} | set(range(floor, d_model, d_multiple)), reverse=True)
  for d in widths:
    for n in range(1, max_blocks + 1):
      params = seen.setdefault((d, n), count(d, n))
      if params is None or params > hi:
        break
  fitting = [(d, n) for (d, n), p in seen.items() if p is not None and lo <= p <= hi]
  if fitting:
    d, n = max(fitting, key=lambda dn: (dn[0], -abs(dn[1] - n_blocks)))
    return _result(tree, d, n, seen[(d, n)], target_params, tolerance, True, seq_len)
  built = [(dn, p) for dn, p in seen.items() if p is not None]
  if not built:
    return _result(tree, d_model, n_blocks, None, target_params, tolerance, False, seq_len)
  (d, n), params = min(built, key=lambda item: abs(math.log(item[1] / target_params)))
  return _result(tree, d, n, params, target_params, tolerance, False, seq_len)


def _result(tree, d, n, params, target, tolerance, fits, seq_len) -> dict[str, Any]:
  return {"d_model": d, "n_blocks": n, "params": params, "target_params": int(target),
          "ratio": None if params is None else round(params / target, 4), "tolerance": tolerance,
          "fits": fits, "block_params": block_params(registry.normalize(tree), d, seq_len)}


def fit_to_rung(tree: Unit, rung: Any, cfg: Any) -> dict[str, Any]:
  """`fit` with the rung's shape and target and the checker config's tolerance and width rules."""
  return fit(tree, rung.target_params, rung.d_model, rung.n_blocks, cfg.vocab_size, cfg.size_tolerance,
             min_d_model=cfg.min_d_model, d_multiple=cfg.d_model_multiple, seq_len=rung.seq_len)


def sized(rung: Any, size: dict[str, Any]) -> Any:
  """A copy of the rung at the d_model and n_blocks of a sizing (`fit_to_rung`; {}: as it is)."""
  out = rung.copy_and_resolve_references()
  out.d_model, out.n_blocks = size.get("d_model", rung.d_model), size.get("n_blocks", rung.n_blocks)
  return out
