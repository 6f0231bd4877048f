"""Training metrics: model FLOPs, MFU and TensorBoard event files.

MFU here uses the standard model-FLOPs count per token, 6·N + 12·L·d·T (N parameters, L blocks,
d model width, T context; attention counted in full, not halved for causality), against the
device's nominal dense bf16 peak. `train.bench` also reports FLOPs from XLA's cost analysis.
"""

from __future__ import annotations

import os
from typing import Any

import jax

# Nominal dense bf16 peak FLOP/s per device, by `device_kind` prefix.
PEAK_BF16 = (
    ("NVIDIA H200", 989e12), ("NVIDIA H100", 989e12), ("NVIDIA A100", 312e12),
    ("NVIDIA L40S", 362e12), ("NVIDIA A6000", 155e12), ("NVIDIA RTX A6000", 155e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v4", 275e12), ("TPU v3", 123e12),
)


def peak_flops(device=None) -> float | None:
  kind = (device or jax.devices()[0]).device_kind
  for prefix, peak in PEAK_BF16:
    if kind.startswith(prefix):
      return peak
  return None


def model_flops_per_token(n_params: int, n_blocks: int, d_model: int, seq_len: int) -> float:
  return 6.0 * n_params + 12.0 * n_blocks * d_model * seq_len


def mfu(flops_per_token: float, tokens_per_s: float | None, n_devices: int | None = None) -> float | None:
  peak = peak_flops()
  if peak is None or not tokens_per_s:
    return None
  return flops_per_token * tokens_per_s / (peak * (n_devices or jax.device_count()))


class Writer:
  """Scalars to TensorBoard event files in `log_dir` (process 0 only; a no-op without a dir)."""

  def __init__(self, log_dir: str | None):
    self._writer = None
    if log_dir and jax.process_index() == 0:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  (already loaded by train.data)
      if "://" not in log_dir:  # gs:// and other URLs: tf.summary creates them
        os.makedirs(log_dir, exist_ok=True)
      self._tf = tf
      self._writer = tf.summary.create_file_writer(log_dir)

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in values.items():
        if value is not None:
          self._tf.summary.scalar(name, float(value), step=step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
