"""FLOPs of one jaxpr equation (no sub-programs: `gab.checks.costs` walks those).

Matmuls and convolutions exactly (a grouped convolution per feature group); linear algebra, FFTs
and sorts by the textbook count of the algorithm XLA calls (Golub & Van Loan for the
factorisations, 5 N log2 N per complex FFT of length N, N log2 N comparisons per sort); other
arithmetic one FLOP per output element (per input element for reductions and scans); data
movement nothing. The textbook counts are lower bounds of what a small factorisation costs on a
real device (LAPACK calls per matrix, iterations), so a step that uses them is also timed
(`ESTIMATED`).
"""

from __future__ import annotations

import math

# Primitives that only move or relabel data: no arithmetic.
_MOVES = {"reshape", "broadcast_in_dim", "transpose", "slice", "dynamic_slice", "dynamic_update_slice",
          "concatenate", "pad", "gather", "scatter", "squeeze", "expand_dims", "convert_element_type",
          "copy", "copy_p", "rev", "iota", "select_n", "stop_gradient", "pjit", "device_put",
          "broadcast", "bitcast_convert_type", "split", "random_bits", "random_wrap", "random_unwrap",
          "random_seed", "threefry2x32", "sharding_constraint", "lu_pivots_to_permutation"}
_REDUCTIONS = ("argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")


def _matrix(aval) -> tuple[float, int, int]:
  """(batch size, rows, columns) of a stack of matrices."""
  *batch, m, n = aval.shape
  return float(math.prod(batch)), m, n


def _factorisation(name: str, eqn) -> float:
  """Golub & Van Loan's counts for one [m, n] matrix (m >= n where it matters), times the batch."""
  b, m, n = _matrix(eqn.invars[0].aval)
  lo, hi = min(m, n), max(m, n)
  per = {
      "cholesky": n ** 3 / 3,
      "lu": hi * lo * lo - lo ** 3 / 3,
      "geqrf": 2 * hi * lo * lo - 2 * lo ** 3 / 3,
      "geqp3": 4 * hi * lo * lo - 4 * lo ** 3 / 3,
      "qr": 4 * hi * lo * lo - 4 * lo ** 3 / 3,                 # R and the explicit Q
      "householder_product": 4 * m * n * lo - 2 * (m + n) * lo * lo + 4 * lo ** 3 / 3,
      "svd": 4 * hi * hi * lo + 8 * hi * lo * lo + 9 * lo ** 3,  # with U and V
      "eigh": 9 * n ** 3,                                     # with eigenvectors
      "eig": 25 * n ** 3,
      "schur": 25 * n ** 3,
      "hessenberg": 10 * n ** 3 / 3,
      "tridiagonal": 4 * n ** 3 / 3,
      "cholesky_update": 4 * n * n,
  }[name]
  return b * max(per, 0.0)


def _triangular_solve(eqn) -> float:
  a, rhs = eqn.invars[0].aval, eqn.invars[1].aval
  return float(math.prod(rhs.shape)) * a.shape[-1]  # n^2 per right-hand side of length n


def _tridiagonal_solve(eqn) -> float:
  return 8.0 * math.prod(eqn.invars[-1].aval.shape)


def _fft(eqn) -> float:
  n = math.prod(eqn.params["fft_lengths"])
  size = max(math.prod(v.aval.shape) for v in [*eqn.invars, *eqn.outvars])
  return 5.0 * size * math.log2(max(n, 2))


def _sort(eqn) -> float:
  n = eqn.invars[0].aval.shape[eqn.params["dimension"]]
  return float(math.prod(eqn.invars[0].aval.shape)) * math.log2(max(n, 2)) * len(eqn.invars)


def _top_k(eqn) -> float:
  return float(math.prod(eqn.invars[0].aval.shape)) * math.log2(max(eqn.params.get("k", 2), 2))


_RULES = {"triangular_solve": _triangular_solve, "tridiagonal_solve": _tridiagonal_solve,
          "fft": _fft, "sort": _sort, "top_k": _top_k}
_FACTORISATIONS = ("cholesky", "lu", "geqrf", "geqp3", "qr", "householder_product", "svd", "eigh",
                   "eig", "schur", "hessenberg", "tridiagonal", "cholesky_update")
# Counted by a rule, but what they cost depends on the device's library: the step is also timed.
ESTIMATED = frozenset(_RULES) | frozenset(_FACTORISATIONS)


def eqn_flops(eqn) -> float:
  """The FLOPs of one equation without sub-programs."""
  name = eqn.primitive.name
  out = eqn.outvars[0].aval if eqn.outvars else None
  if name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    return 2.0 * math.prod(out.shape) * math.prod(lhs.shape[i] for i in lhs_contract)
  if name == "conv_general_dilated":
    rhs = eqn.invars[1].aval
    out_features = rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * math.prod(out.shape) * math.prod(rhs.shape) / max(out_features, 1)
  if name in _RULES:
    return _RULES[name](eqn)
  if name in _FACTORISATIONS:
    return _factorisation(name, eqn)
  if name in _MOVES or not eqn.outvars:
    return 0.0
  values = eqn.invars if name.startswith("reduce_") or name in _REDUCTIONS else eqn.outvars
  return float(sum(math.prod(getattr(v.aval, "shape", ())) for v in values if hasattr(v, "aval")))
