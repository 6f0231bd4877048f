"""Training metrics: model FLOPs, MFU and TensorBoard event files.

MFU here uses the standard model-FLOPs count per token, 6·N + 12·L·d·T (N parameters, L blocks,
d model width, T context; attention counted in full, not halved for causality), against the
device's nominal dense bf16 peak. `train.bench` also reports FLOPs from XLA's cost analysis.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
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


def clear_events(log_dir: str) -> None:
  """Remove the TensorBoard event files of earlier attempts from `log_dir` (a resumed run writes
  its whole curve again, from the losses kept in the checkpoint, into one new file)."""
  if "://" in log_dir or not os.path.isdir(log_dir):  # (URLs: left to their own store)
    return
  for name in os.listdir(log_dir):
    if name.startswith("events.out.tfevents"):
      os.remove(os.path.join(log_dir, name))


class Writer:
  """Scalars to TensorBoard event files in `log_dir` (process 0 only; a no-op without a dir).

  A local directory gets TensorBoard's record format written to a plain file (`_EventFile`): its
  own EventFileWriter goes through TensorFlow's file layer whenever TensorFlow is installed, which
  would import TensorFlow (seconds, hundreds of MB and its start-up lines) in every training
  process. A URL (gs://...) keeps that writer, whose file layer reaches such stores.
  """

  def __init__(self, log_dir: str | None):
    self._writer = None
    if log_dir and jax.process_index() == 0:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
      self._pb = (event_pb2, summary_pb2)
      if "://" in log_dir:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=g-import-not-at-top
        self._writer = EventFileWriter(log_dir)
      else:
        self._writer = _EventFile(log_dir, event_pb2)

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    if self._writer is None:
      return
    event_pb2, summary_pb2 = self._pb
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=name, simple_value=float(value))
        for name, value in values.items() if value is not None])
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


_FILE_IDS = itertools.count()  # files this process began (two in one second stay apart)


class _EventFile:
  """One TensorBoard event file in a local directory, named and begun as TensorBoard's writer does."""

  def __init__(self, log_dir: str, event_pb2):
    from tensorboard.summary.writer.record_writer import RecordWriter  # pylint: disable=g-import-not-at-top
    os.makedirs(log_dir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
            f"{next(_FILE_IDS)}")
    self._file = open(os.path.join(log_dir, name), "wb")
    self._records = RecordWriter(self._file)
    self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def add_event(self, event) -> None:
    self._records.write(event.SerializeToString())

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()
