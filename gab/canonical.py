"""Design identity: a canonical form for structural equivalence and a functional fingerprint.

Two trees that differ only in how they spell the same computation get the same `canonical_id`:
- omitted hyperparameters are filled with their defaults (`registry.normalize`);
- nested Sequences are flattened (`Sequence(a, Sequence(b, c))` is `Sequence(a, b, c)`), and so are
  nested Parallels (a sum is associative);
- a single-child Sequence is replaced by its child;
- Parallel children are ordered by their canonical JSON (a sum is commutative), unless a branch
  reads a Z entry that another branch writes (then the order in which Z is threaded matters).
The canonical form is an identity, not a design to train: flattening may exceed a kind's child count
(Sequence takes at most 4 steps), so it need not pass `registry.type_errors`.

`fingerprint` goes further and hashes what the block computes (see its docstring for what equal
fingerprints do and do not guarantee).
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from gab import registry
from gab.model import GAB, initial_z
from gab.tree import Unit

_FLATTEN = ("Sequence", "Parallel")


def canonical(tree: Unit) -> Unit:
  """The canonical form of `tree` (idempotent: `canonical(canonical(t)) == canonical(t)`)."""
  return _canonical(registry.normalize(tree))


def _canonical(unit: Unit) -> Unit:
  children = [_canonical(c) for c in unit.children]
  if unit.kind in _FLATTEN:
    flat = []
    for child in children:
      flat.extend(child.children if child.kind == unit.kind else [child])
    children = flat
  if unit.kind == "Sequence" and len(children) == 1:
    return children[0]
  if unit.kind == "Parallel" and _z_independent(children):
    children = sorted(children, key=lambda c: c.canonical_json())
  return unit.with_children(children)


def _z_entries(unit: Unit, field: str) -> list[str]:
  return [name for _, u in unit.walk() for name in getattr(registry.get(u.kind), field)]


def _z_independent(branches: list[Unit]) -> bool:
  """True when no branch reads or writes a Z entry that another branch writes."""
  for i, branch in enumerate(branches):
    touched = _z_entries(branch, "reads") + _z_entries(branch, "writes")
    for j, other in enumerate(branches):
      if i != j and any(name in touched for name in _z_entries(other, "writes")):
        return False
  return True


def canonical_id(tree: Unit) -> str:
  """A 16-hex-digit content hash of the canonical form, stable across processes and machines."""
  return canonical(tree).content_hash()


def fingerprint(tree: Unit, d_model: int = 64, length: int = 256, digits: int = 4) -> str:
  """A 16-hex-digit hash of what the block computes at initialisation on a fixed input.

  The block compiled from the canonical form of `tree` is initialised at a fixed key and applied
  (eagerly, so every design runs the same per-op code) to a fixed [2, length, d_model] input; its
  outputs are rounded to `digits` significant digits and hashed. What this guarantees:
  - Same `canonical_id` => same fingerprint: both compile the same canonical tree, so parameter
    names, initial values and the order of every float operation agree (on one platform; another
    backend may round differently, so compare fingerprints made on the same kind of machine).
  - Same fingerprint, different canonical trees => the two blocks compute the same outputs at
    initialisation on this input, at this d_model and length: very likely one design spelled two
    ways, but not proven. Hyperparameters that only act beyond `length` (an attention window >=
    length) would collide, hence a default length above every window in the unit library.
  - Different fingerprints do not prove different designs: parameters are named by tree path and
    initialised from those names, so equivalences the canonical form does not undo (say,
    Gate(a, b) with identity activation vs Gate(b, a)) start from different values and differ.
  Raises whatever initialisation or the forward pass raises for a design that cannot run.
  A design with code units is fingerprinted from its exported `fingerprint_program` (compiled,
  not eager: its last digit may round differently from an eager run).
  """
  # Called eagerly: per-op caches beat a compile per design.
  y_BxLxD = fingerprint_program(tree)(fingerprint_input(d_model, length))
  return digest(y_BxLxD, digits)


def fingerprint_input(d_model: int = 64, length: int = 256) -> jax.Array:
  return jax.random.normal(jax.random.key(20240601), (2, length, d_model), jnp.float32)


def fingerprint_program(tree: Unit):
  """`x_BxLxD -> y_BxLxD`: the canonical block, initialised at key 0, applied to `x`."""
  block = GAB(canonical(tree))

  def run(x_BxLxD):
    z = initial_z(jnp.zeros(x_BxLxD.shape[:2], jnp.int32))
    params = block.init(jax.random.key(0), x_BxLxD, z)
    return block.apply(params, x_BxLxD, z)[0]
  return run


def digest(y_BxLxD, digits: int = 4) -> str:
  rounded = _round_significant(np.asarray(y_BxLxD, np.float64), digits)
  return hashlib.sha256(rounded.tobytes()).hexdigest()[:16]


def _round_significant(x: np.ndarray, digits: int) -> np.ndarray:
  """Round to `digits` significant digits; zeros and non-finite values pass through unchanged."""
  finite = np.isfinite(x) & (x != 0)
  safe = np.where(finite, np.abs(x), 1.0)
  scale = 10.0 ** (digits - 1 - np.floor(np.log10(safe)))
  out = np.where(finite, np.round(x * scale) / scale, x)
  return out + 0.0  # turns -0.0 into 0.0 so both hash alike
