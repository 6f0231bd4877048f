"""Units written to break one rule each, registered only by the tests that use them (`kinds`).

Each is what an LLM-written unit might plausibly do wrong (or do on purpose); none is in gab.units.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import registry
from gab.registry import CHANNEL, MIXER, KindSpec, Param
from gab.units.base import UnitModule
from gab.units.conv import causal_depthwise_conv


def shift_back(x_BxLxD, k):
  """y_t = x_{t+k} (zeros past the end): a look-ahead by k."""
  return jnp.pad(x_BxLxD, ((0, 0), (0, k), (0, 0)))[:, k:k + x_BxLxD.shape[1]]


class Mixer(UnitModule):
  """Base: a causal depthwise conv (so the unit is a real mixer) plus `extra(x)`."""

  @nn.compact
  def __call__(self, x, z):
    kernel = self.param("kernel", nn.initializers.normal(0.3), (3, x.shape[-1]), jnp.float32)
    y = causal_depthwise_conv(x, kernel)
    return self.dense(x.shape[-1], "out", out=True)(y + self.extra(x, z)), z

  def extra(self, x, z):
    return 0.0


class LookAhead40(Mixer):
  """Reads 40 positions ahead: invisible at the probe's 32."""
  def extra(self, x, z):
    return shift_back(x, 40)


class NextChunk(Mixer):
  """Chunks of 48 (longer than the probe); each chunk's state also sums the NEXT chunk."""
  def extra(self, x, z):
    b, l, d = x.shape
    c = 48
    n = -(-l // c)
    xp = jnp.pad(x, ((0, 0), (0, n * c - l), (0, 0))).reshape(b, n, c, d)
    state = jnp.cumsum(xp, axis=2) / c
    nxt = jnp.pad(xp.sum(2)[:, 1:], ((0, 0), (0, 1), (0, 0)))[:, :, None] / c
    return (state + nxt).reshape(b, n * c, d)[:, :l]


class CausalWhileShort(Mixer):
  """Causal while L <= 32; a reverse cumulative sum beyond."""
  def extra(self, x, z):
    if x.shape[1] <= 32:
      return jnp.cumsum(x, 1) / x.shape[1]
    return jnp.flip(jnp.cumsum(jnp.flip(x, 1), 1), 1) / x.shape[1]


class ProbeShaped(Mixer):
  """Causal only for the replacement probe's shape [L + 1, L]; otherwise looks one step ahead."""
  def extra(self, x, z):
    if x.shape[0] == x.shape[1] + 1:
      return 0.0
    return shift_back(x, 1)


class DistanceToEnd(Mixer):
  """Adds a feature of the distance to the end of the sequence, L - 1 - t."""
  def extra(self, x, z):
    l = x.shape[1]
    dist = (l - 1 - jnp.arange(l)).astype(x.dtype)[None, :, None]
    return jnp.sin(dist / 3.0) * jnp.ones_like(x)


class BatchTimeNorm(Mixer):
  """BatchNorm-style: normalised by mean and variance over batch and time."""
  def extra(self, x, z):
    mu = x.mean((0, 1), keepdims=True)
    return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean((0, 1), keepdims=True) + 1e-5)


class BatchMeanNow(Mixer):
  """Adds the batch mean at the same position: causal in time, but sequences see each other."""
  def extra(self, x, z):
    return jnp.broadcast_to(x.mean(0, keepdims=True), x.shape)


class ZeroGateLeak(UnitModule):
  """A causal conv plus a look-ahead by one through a gate initialised to exactly zero."""
  @nn.compact
  def __call__(self, x, z):
    kernel = self.param("kernel", nn.initializers.normal(0.3), (3, x.shape[-1]), jnp.float32)
    g = self.param("gate", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    y = causal_depthwise_conv(x, kernel) + g.astype(x.dtype)[None, None, :] * shift_back(x, 1)
    return self.dense(x.shape[-1], "out", out=True)(y), z


class LargeActivationLeak(UnitModule):
  """On the residual stream: looks one step ahead only where |x| > 1 (large activations)."""
  @nn.compact
  def __call__(self, x, z):
    y = self.dense(x.shape[-1], "proj", out=True)(x)
    fut = shift_back(x, 1)
    return y + jnp.where(jnp.abs(fut) > 1.0, fut, 0.0), z


class TinyLeak(Mixer):
  """Adds 1e-8 x the next token's features."""
  def extra(self, x, z):
    return 1e-8 * shift_back(x, 1)


class StopGradLeak(Mixer):
  """Looks ahead through a function with zero derivative (rounding of the next token's features)."""
  def extra(self, x, z):
    return jax.lax.stop_gradient(jnp.round(shift_back(x, 1) * 100.0) / 100.0)


class TimeMajorWriter(UnitModule):
  """Writes Z['tm'] time-major ([L, B, D]): a backwards running mean (a leak), read by nobody."""
  @nn.compact
  def __call__(self, x, z):
    rev = jnp.flip(jnp.cumsum(jnp.flip(x, 1), 1), 1) / x.shape[1]
    return self.dense(x.shape[-1], "proj", out=True)(x), {**z, "tm": jnp.swapaxes(rev, 0, 1)}


class TimeMajorReader(UnitModule):
  """Reads Z['tm'] (time-major) in the blocks after the first."""
  @nn.compact
  def __call__(self, x, z):
    src = jnp.swapaxes(z["tm"], 0, 1) if self.layer > 0 else x
    return self.dense(x.shape[-1], "proj", out=True)(src), z


class InPlaceWriter(UnitModule):
  """Writes Z['hidden'] by mutating the dict it was given, declaring nothing."""
  @nn.compact
  def __call__(self, x, z):
    z["hidden"] = jnp.flip(jnp.cumsum(jnp.flip(x, 1), 1), 1) / x.shape[1]
    return self.dense(x.shape[-1], "proj", out=True)(x), z


class ItemsReader(UnitModule):
  """Reads every float Z entry by iterating z.items() (never z[k]), declaring nothing."""
  @nn.compact
  def __call__(self, x, z):
    extra = sum((v for _, v in z.items() if jnp.issubdtype(v.dtype, jnp.floating)
                 and v.shape == x.shape), jnp.zeros_like(x))
    return self.dense(x.shape[-1], "proj", out=True)(x + extra), z


class HonestWriter(UnitModule):
  """Writes Z['memo'] = its (causal) input, declared."""
  @nn.compact
  def __call__(self, x, z):
    return self.dense(x.shape[-1], "proj", out=True)(x), {**z, "memo": x}


class Bf16Variance(UnitModule):
  """RMS-normalises by sqrt(E[x^2] - E[x]^2) of x shifted by 100: fine in float32, but the
  cancellation makes the variance negative (NaN) in bfloat16."""
  @nn.compact
  def __call__(self, x, z):
    h = x + jnp.asarray(100.0, x.dtype)
    var = (h * h).mean(-1, keepdims=True) - h.mean(-1, keepdims=True) ** 2
    return self.dense(x.shape[-1], "proj", out=True)(x / jnp.sqrt(var)), z


class PositionBias(UnitModule):
  """A whole block that ignores its input: bias[t] + 1e-30 x."""
  @nn.compact
  def __call__(self, x, z):
    bias = self.param("bias", nn.initializers.normal(1.0), (512, x.shape[-1]), jnp.float32)
    return (bias[None, :x.shape[1]] + 1e-30 * x).astype(x.dtype), z


class PositionwiseMixer(UnitModule):
  """Registered as a sequence mixer, but position-wise (a dense layer)."""
  @nn.compact
  def __call__(self, x, z):
    return self.dense(x.shape[-1], "proj", out=True)(jax.nn.silu(x)), z


@jax.custom_vjp
def _repeated_matmul(x, w):
  def body(carry):
    i, y = carry
    v = y @ w.astype(y.dtype)
    return i + 1, v * jax.lax.rsqrt(jnp.mean(v * v, -1, keepdims=True) + 1e-6)  # bounded at any w
  return jax.lax.while_loop(lambda c: c[0] < 400, body, (jnp.int32(0), x))[1]


def _repeated_fwd(x, w):
  return _repeated_matmul(x, w), (x, w)


def _repeated_bwd(res, g):  # a cheap backward: as if the loop were one multiplication
  x, w = res
  gw = jnp.einsum("...i,...j->ij", x.astype(jnp.float32), g.astype(jnp.float32)).astype(w.dtype)
  return (g @ w.T.astype(g.dtype), gw)


_repeated_matmul.defvjp(_repeated_fwd, _repeated_bwd)


class WhileLoopMatmuls(UnitModule):
  """Multiplies by the same d x d matrix 400 times inside a while_loop, normalising each product
  (XLA counts a loop body once; a custom VJP makes it trainable)."""
  @nn.compact
  def __call__(self, x, z):
    w = self.param("w", nn.initializers.orthogonal(), (x.shape[-1], x.shape[-1]), jnp.float32)
    return _repeated_matmul(x, w), z


class LongDepthwiseConv(UnitModule):
  """A real grouped (depthwise) causal convolution with a kernel of 160 > the context (128)."""
  @nn.compact
  def __call__(self, x, z):
    d, k = x.shape[-1], 160
    conv = nn.Conv(d, kernel_size=(k,), feature_group_count=d, padding=[(k - 1, 0)],
                   dtype=self.dtype, param_dtype=jnp.float32, name="conv")
    return conv(x), z


# -- leaks the design's own gradients hide, and paths taken only under training conditions --------
@jax.custom_vjp
def _peek(x):
  return shift_back(x, 1)


def _peek_fwd(x):
  return _peek(x), None


def _peek_bwd(_, g):  # the backward of a causal kernel: nothing flows to the future
  return (jnp.zeros_like(g),)


_peek.defvjp(_peek_fwd, _peek_bwd)


class CustomVJPLeak(Mixer):
  """A fused kernel whose forward reads the next token and whose custom backward is causal."""
  def extra(self, x, z):
    return _peek(x)


class SegmentMemory(Mixer):
  """Transformer-XL style: each 48-token segment adds a stop_gradient summary of the previous
  segment, off by one (it takes two tokens past the boundary): the first token of every segment
  after the first sees the next one."""
  def extra(self, x, z):
    length, seg = x.shape[1], 48
    csum = jnp.cumsum(jnp.pad(x.astype(jnp.float32), ((0, 0), (1, seg), (0, 0))), axis=1)
    t = jnp.arange(length)
    start = t // seg * seg
    hi, lo = jnp.minimum(start + 2, length), jnp.maximum(start - seg, 0)
    mem = (csum[:, hi] - csum[:, lo]) / seg
    mem = jnp.where((t >= seg)[None, :, None], mem, 0.0)
    return jax.lax.stop_gradient(mem).astype(x.dtype)


class PeekWriter(UnitModule):
  """Writes Z['peek'], the next position's features behind stop_gradient; reads nothing ahead itself."""
  @nn.compact
  def __call__(self, x, z):
    return self.dense(x.shape[-1], "proj", out=True)(x), {**z, "peek": jax.lax.stop_gradient(shift_back(x, 1))}


class PeekReader(UnitModule):
  """Adds a projection of Z['peek']: the second half of a leak split across two units."""
  @nn.compact
  def __call__(self, x, z):
    return x + self.dense(x.shape[-1], "proj", out=True)(z["peek"]), z


class Bf16PathLeak(Mixer):
  """Reads the next token (behind stop_gradient) only when it computes in bfloat16."""
  def extra(self, x, z):
    return jax.lax.stop_gradient(shift_back(x, 1)) if x.dtype == jnp.bfloat16 else 0.0


class FastPath64(Mixer):
  """A "fast path" taken only when the length divides by 64, which reads the next token."""
  def extra(self, x, z):
    return jax.lax.stop_gradient(shift_back(x, 1)) if x.shape[1] % 64 == 0 else 0.0


class MagnitudeGate(Mixer):
  """A look-ahead gated by a scalar's magnitude: closed at |g| <= 4 (initially 1; random
  perturbations do not reach 4), open once training has grown it."""
  def extra(self, x, z):
    g = self.param("g", nn.initializers.ones, (), jnp.float32)
    return jnp.where(jnp.abs(g) > 4.0, g, 0.0).astype(x.dtype) * shift_back(x, 1)


class OpensWhenTrained(Mixer):
  """Looks ahead once a scalar has moved from its initial 0 (it also scales the input, so the
  first optimiser step moves it): closed at initialisation, open after training."""
  def extra(self, x, z):
    g = self.param("g", nn.initializers.zeros, (), jnp.float32)
    return jnp.where(jnp.abs(g) > 1e-6, 1.0, 0.0).astype(x.dtype) * shift_back(x, 1) + g.astype(x.dtype) * x


class FFTConv(UnitModule):
  """A long convolution computed by FFT (Hyena style), causal: a kernel over all L lags, each
  channel a decaying oscillation, the input zero-padded to 2L. Exact arithmetic would give
  positions <= t no trace of the tokens after t; the FFT's rounding gives them ~1e-7."""
  @nn.compact
  def __call__(self, x, z):
    b, length, d = x.shape
    decay = self.param("decay", nn.initializers.uniform(0.5), (d,), jnp.float32)
    freq = self.param("freq", nn.initializers.uniform(0.5), (d,), jnp.float32)
    lag = jnp.arange(length, dtype=jnp.float32)[:, None]
    kernel_LxD = jnp.exp(-jax.nn.softplus(decay)[None, :] * lag) * jnp.cos(freq[None, :] * lag)
    n = 2 * length
    y = jnp.fft.irfft(jnp.fft.rfft(x.astype(jnp.float32), n=n, axis=1)
                      * jnp.fft.rfft(kernel_LxD, n=n, axis=0)[None], n=n, axis=1)[:, :length]
    return self.dense(d, "out", out=True)(y.astype(x.dtype)), z


class Hang(UnitModule):
  """Never returns: loops in Python while it is traced."""
  @nn.compact
  def __call__(self, x, z):
    while True:
      pass


KINDS = [
    KindSpec("LookAhead40", MIXER, LookAhead40),
    KindSpec("NextChunk", MIXER, NextChunk),
    KindSpec("CausalWhileShort", MIXER, CausalWhileShort),
    KindSpec("ProbeShaped", MIXER, ProbeShaped),
    KindSpec("DistanceToEnd", MIXER, DistanceToEnd),
    KindSpec("BatchTimeNorm", MIXER, BatchTimeNorm),
    KindSpec("BatchMeanNow", MIXER, BatchMeanNow),
    KindSpec("ZeroGateLeak", MIXER, ZeroGateLeak),
    KindSpec("LargeActivationLeak", CHANNEL, LargeActivationLeak),
    KindSpec("TinyLeak", MIXER, TinyLeak),
    KindSpec("StopGradLeak", MIXER, StopGradLeak),
    KindSpec("TimeMajorWriter", CHANNEL, TimeMajorWriter, writes=("tm",)),
    KindSpec("TimeMajorReader", CHANNEL, TimeMajorReader, reads=("tm",)),
    KindSpec("InPlaceWriter", CHANNEL, InPlaceWriter),
    KindSpec("ItemsReader", CHANNEL, ItemsReader),
    KindSpec("HonestWriter", CHANNEL, HonestWriter, writes=("memo",)),
    KindSpec("Bf16Variance", CHANNEL, Bf16Variance),
    KindSpec("PositionBias", MIXER, PositionBias),
    KindSpec("PositionwiseMixer", MIXER, PositionwiseMixer),
    KindSpec("WhileLoopMatmuls", CHANNEL, WhileLoopMatmuls),
    KindSpec("LongDepthwiseConv", MIXER, LongDepthwiseConv),
    KindSpec("Hang", MIXER, Hang),
    KindSpec("CustomVJPLeak", MIXER, CustomVJPLeak),
    KindSpec("SegmentMemory", MIXER, SegmentMemory),
    KindSpec("PeekWriter", CHANNEL, PeekWriter, writes=("peek",)),
    KindSpec("PeekReader", CHANNEL, PeekReader, reads=("peek",)),
    KindSpec("Bf16PathLeak", MIXER, Bf16PathLeak),
    KindSpec("FastPath64", MIXER, FastPath64),
    KindSpec("MagnitudeGate", MIXER, MagnitudeGate),
    KindSpec("OpensWhenTrained", MIXER, OpensWhenTrained),
    KindSpec("FFTConv", MIXER, FFTConv),
]


def register(kinds=None):
  """Register `kinds` (this module's by default; tests/adversarial/costly_units' use it too)."""
  for spec in KINDS if kinds is None else kinds:
    registry.register(spec)


def unregister(kinds=None):
  for spec in KINDS if kinds is None else kinds:
    registry._REGISTRY.pop(spec.name, None)  # pylint: disable=protected-access
