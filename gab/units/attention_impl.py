"""Which kernel computes softmax attention: cuDNN on NVIDIA GPUs, Pallas flash on TPUs, XLA else.

Every softmax-attention unit calls `dot_product_attention` here. The implementation comes from
the model (`LM(attention=...)`, set by `--config.train.attention`, default "auto") through a
context variable that `LM` sets while it traces its blocks:

- "auto": cuDNN's fused flash attention on an NVIDIA GPU of compute capability >= 8.0 in
  bf16/fp16 with a head size that is a multiple of 8 and at most 128 (256 from Hopper on);
  the Pallas flash-attention kernel on a TPU for plain causal attention (no window) over a
  length that is a multiple of 128; XLA otherwise (and always on CPU).
- "xla", "cudnn", "pallas": that implementation where it applies; where it does not, XLA, with
  a warning that says why (once per reason).

All compute the same function (causal softmax attention, scale 1/sqrt(head size)), so a design's
outputs agree across implementations to the compute dtype's tolerance.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import jax
import jax.numpy as jnp
from absl import logging

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
_CURRENT = contextvars.ContextVar("genesys_attention_impl", default="auto")
_WARNED: set = set()


@contextlib.contextmanager
def use(implementation: str):
  """Attention inside the block uses `implementation` (one of IMPLEMENTATIONS)."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"train.attention {implementation!r}: expected one of {list(IMPLEMENTATIONS)}")
  token = _CURRENT.set(implementation)
  try:
    yield
  finally:
    _CURRENT.reset(token)


def current() -> str:
  return _CURRENT.get()


def _cudnn_problem(platform, compute_capability, dtype, head_dim) -> str | None:
  if platform != "gpu":
    return f"cuDNN needs an NVIDIA GPU (backend is {platform})"
  try:
    cc = float(compute_capability or 0)
  except ValueError:
    cc = 0.0
  if cc < 8.0:
    return f"cuDNN flash attention needs compute capability >= 8.0, not {compute_capability}"
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return f"cuDNN flash attention needs bfloat16 or float16, not {jnp.dtype(dtype).name}"
  h_max = 256 if cc >= 9.0 else 128
  if head_dim % 8 or head_dim > h_max:
    return f"cuDNN needs a head size that is a multiple of 8 and <= {h_max}, not {head_dim}"
  return None


def _pallas_problem(platform, seq_len, head_dim, window) -> str | None:
  if platform != "tpu":
    return f"the Pallas flash kernel is for TPUs (backend is {platform})"
  if window is not None:
    return "the Pallas flash kernel has no sliding window"
  if seq_len % 128:
    return f"the Pallas flash kernel needs a length that is a multiple of 128, not {seq_len}"
  if head_dim % 8:
    return f"the Pallas flash kernel needs a head size that is a multiple of 8, not {head_dim}"
  return None


def choose(requested: str, *, platform: str, dtype, seq_len: int, head_dim: int,
           window: int | None = None, compute_capability: str | None = None) -> tuple[str, str]:
  """(implementation, why) for one attention call; pure, so the selection can be tested."""
  if requested not in IMPLEMENTATIONS:
    raise ValueError(f"train.attention {requested!r}: expected one of {list(IMPLEMENTATIONS)}")
  if requested == "xla":
    return "xla", "requested"
  cudnn = _cudnn_problem(platform, compute_capability, dtype, head_dim)
  pallas = _pallas_problem(platform, seq_len, head_dim, window)
  if requested == "auto":
    if platform == "gpu":
      return ("cudnn", "fastest on this GPU") if cudnn is None else ("xla", cudnn)
    if platform == "tpu":
      return ("pallas", "fastest on this TPU") if pallas is None else ("xla", pallas)
    return "xla", f"{platform} backend"
  problem = cudnn if requested == "cudnn" else pallas
  return (requested, "requested") if problem is None else ("xla", problem)


def _device_facts() -> tuple[str, str | None]:
  device = jax.devices()[0]
  return device.platform, getattr(device, "compute_capability", None)


def _pallas_flash(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK):
  from jax.experimental.pallas.ops.tpu import flash_attention as fa  # pylint: disable=g-import-not-at-top
  h, g = q_BxLxHxK.shape[2], k_BxLxGxK.shape[2]
  if g != h:  # grouped queries: each key/value head serves h // g query heads
    k_BxLxGxK = jnp.repeat(k_BxLxGxK, h // g, axis=2)
    v_BxLxGxK = jnp.repeat(v_BxLxGxK, h // g, axis=2)
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q_BxLxHxK, k_BxLxGxK, v_BxLxGxK))
  y_BxHxLxK = fa.flash_attention(q, k, v, causal=True, sm_scale=1.0 / math.sqrt(q.shape[-1]))
  return y_BxHxLxK.transpose(0, 2, 1, 3)


def dot_product_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, *, window: int | None = None):
  """Causal softmax attention (query t sees keys t - window + 1 .. t with `window`), computed
  by the implementation `choose` picks for the current setting, device, dtype and shapes."""
  platform, cc = _device_facts()
  impl, why = choose(current(), platform=platform, dtype=q_BxLxHxK.dtype,
                     seq_len=q_BxLxHxK.shape[1], head_dim=q_BxLxHxK.shape[-1], window=window,
                     compute_capability=cc)
  if impl == "xla" and current() not in ("auto", "xla") and (current(), why) not in _WARNED:
    _WARNED.add((current(), why))
    logging.warning("attention: %s requested but %s; using XLA", current(), why)
  if impl == "pallas":
    return _pallas_flash(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK)
  return jax.nn.dot_product_attention(
      q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, is_causal=True,
      local_window_size=None if window is None else (window - 1, 0), implementation=impl)
