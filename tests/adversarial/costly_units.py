"""Units whose train step costs more than a FLOP count of its program says (or less), one per way.

Registered only by the tests that use them (`leaky_units.register(KINDS)`). Each adds at most a
d x d matrix or two of parameters, so sizing and every check before efficiency see an ordinary
design.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gab.registry import CHANNEL, KindSpec, Param
from gab.units.base import UnitModule


def _fixed_point(x, w):
  """h = tanh(h W + x / 10) iterated to a fixed point (|change| < 1e-6, at most 600 times): one step
  on all-zero inputs (h = 0 is the fixed point at once), hundreds on real ones."""
  def body(carry):
    i, h, _ = carry
    new = jnp.tanh(h @ w + 0.1 * x)
    return i + 1, new, jnp.max(jnp.abs(new - h))
  return jax.lax.while_loop(lambda c: (c[0] < 600) & (c[2] > 1e-6), body,
                            (jnp.int32(0), jnp.zeros_like(x), jnp.float32(1.0)))[1]


@jax.custom_vjp
def fixed_point(x, w):
  return _fixed_point(x, w)


def _fixed_point_fwd(x, w):
  h = _fixed_point(x, w)
  return h, (h, w)


def _fixed_point_bwd(res, g):  # one-step implicit gradient: cheap, as DEQ layers often do
  h, w = res
  gz = g * (1 - h * h)
  gw = jnp.einsum("...i,...j->ij", h.astype(jnp.float32), gz.astype(jnp.float32)).astype(w.dtype)
  return gz, gw


fixed_point.defvjp(_fixed_point_fwd, _fixed_point_bwd)


class FixedPointLayer(UnitModule):
  """A deep-equilibrium layer: the fixed point of tanh(h W + x / 10), W a contraction (0.99 x
  orthogonal)."""

  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    w = self.param("w", lambda key, shape, dtype: 0.99 * nn.initializers.orthogonal()(key, shape, dtype),
                   (d, d), jnp.float32)
    h = fixed_point(x.astype(jnp.float32), w)
    return self.dense(d, "out", out=True)(h.astype(x.dtype)), z


class PerTokenEigh(UnitModule):
  """Per token, the eigendecomposition of a 64 x 64 symmetric matrix built from the token: one
  small LAPACK call per position."""

  @nn.compact
  def __call__(self, x, z):
    b, l, d = x.shape
    k = 64
    u, a = jnp.split(self.dense(2 * k, "ua")(x).astype(jnp.float32), 2, axis=-1)
    # diag(u) + a a^T / k: distinct eigenvalues (finite eigenvector gradients) for almost any token
    m_BxLxKxK = jnp.vectorize(jnp.diag, signature="(k)->(k,k)")(u) + a[..., :, None] * a[..., None, :] / k
    values, vectors = jnp.linalg.eigh(m_BxLxKxK)
    feats = jnp.concatenate([values, vectors[..., 0]], -1)
    return self.dense(d, "out", out=True)(feats.astype(x.dtype)), z


@functools.lru_cache(maxsize=4)
def _table(mebibytes: int, d: int) -> np.ndarray:
  rows = (mebibytes << 20) // (4 * d)
  return np.random.default_rng(0).random((rows, d), dtype=np.float32) * 0.01


class ConstantTable(UnitModule):
  """Adds a row of a table of fixed features (a hashed n-gram table, say; 192 MiB by default) baked
  into the program as a constant: memory no parameter count shows."""

  @nn.compact
  def __call__(self, x, z):
    b, l, d = x.shape
    table = _table(self.hp("mebibytes"), d)
    ids_BxL = (x[..., 0] * 1e4).astype(jnp.int32) % table.shape[0]
    rows_BxLxD = jnp.take(jnp.asarray(table), ids_BxL, axis=0)
    return self.dense(d, "out", out=True)(x + rows_BxLxD.astype(x.dtype)), z


@jax.checkpoint  # its activations are recomputed in the backward pass, not kept
def _careful(h, w):
  """A slow path: 64 more tanh(h W) layers, d x d each (as if re-running in higher precision)."""
  return jax.lax.fori_loop(0, 64, lambda i, v: jnp.tanh(v @ w), h)


class NaNGuard(UnitModule):
  """A projection whose output goes through a slow repair path only when it is not finite; on any
  ordinary input the cheap branch runs."""

  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    w = self.param("w", nn.initializers.orthogonal(), (d, d), jnp.float32)
    h = jnp.tanh(x.astype(jnp.float32) @ w)
    h = jax.lax.cond(jnp.all(jnp.isfinite(h)), lambda v: v, lambda v: _careful(jnp.nan_to_num(v), w), h)
    return self.dense(d, "out", out=True)(h.astype(x.dtype)), z


KINDS = [KindSpec(cls.__name__, CHANNEL, cls) for cls in (FixedPointLayer, PerTokenEigh, NaNGuard)]
KINDS.append(KindSpec("ConstantTable", CHANNEL, ConstantTable,
                      params=(Param("mebibytes", 192, (24, 192)),)))
