"""Orbax checkpoints of a training run: train state, data position and RNG, saved together.

Saves are periodic with a retention policy and commit atomically (Orbax writes to a temporary
directory and renames it). On restart, the latest step that restores cleanly wins: a partial or
corrupted latest checkpoint is skipped, with a warning, for the previous good one.
"""

from __future__ import annotations

import contextlib
import gc
import logging as pylogging
import os
import sys
import traceback
from typing import Any, Callable

import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for {"state": pytree, "meta": JSON}."""

  def __init__(self, directory: str, max_to_keep: int = 2, save_every: int = 0):
    self.directory = directory if "://" in directory else os.path.abspath(directory)  # gs:// too
    self.save_every = save_every
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def close(self):
    self._mngr.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def should_save(self, step: int, last_step: int) -> bool:
    return step == last_step or (self.save_every > 0 and step % self.save_every == 0)

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    if step in self._mngr.all_steps():
      return
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  meta=ocp.args.JsonSave(meta)))
    self._mngr.wait_until_finished()

  def restore_latest(self, abstract_state: Any,
                     warn: Callable[[str], None] = logging.warning) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint that restores, or None if there is none.

    Each unreadable checkpoint is one warning line: the errors its failed reads leave behind on
    asyncio's logger ("Task exception was never retrieved", one per array) are held back."""
    with _quiet_asyncio():
      for step in reversed(self.steps()):
        try:
          out = self._mngr.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
          return step, out["state"], dict(out["meta"])
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way
          warn(f"checkpoint step {step} in {self.directory} is unreadable "
               f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); deleting "
               f"it and trying the previous one")
          self._mngr.delete(step)
      return None


class _DropAll(pylogging.Filter):
  def filter(self, record: pylogging.LogRecord) -> bool:
    return False


_ORBAX_READS = ("_read_array_index_and_device_put",)


def _is_callback_into_closed_loop(unraisable) -> bool:
  """TensorStore completing a failed restore's other reads after its event loop closed: their done
  callback is `loop.call_soon_threadsafe` itself, reported with no object and only its frames."""
  return (unraisable.object is None and unraisable.exc_type is RuntimeError
          and str(unraisable.exc_value) == "Event loop is closed"
          and [f.name for f in traceback.extract_tb(unraisable.exc_traceback)]
          == ["call_soon_threadsafe", "_check_closed"])


def _drop_failed_restore_noise(previous):
  """An unraisable-exception hook that drops the "Exception ignored in: <coroutine
  _read_array_index_and_device_put>" tracebacks Orbax's failed reads print when their coroutines are
  collected (possibly well after the restore returned), and the bare "RuntimeError: Event loop is
  closed" ones of TensorStore's late callbacks, and hands everything else to `previous`."""
  def hook(unraisable):
    obj = unraisable.object
    if getattr(obj, "__qualname__", "") in _ORBAX_READS or getattr(
        getattr(obj, "cr_code", None), "co_name", "") in _ORBAX_READS:
      return
    if _is_callback_into_closed_loop(unraisable):
      return
    previous(unraisable)
  hook._drops_orbax_reads = True
  return hook


@contextlib.contextmanager
def _quiet_asyncio():
  """Hold back asyncio's logger while restoring, collecting garbage (and the never-retrieved task
  errors it logs) before letting it speak again; failed-read coroutines collected later are
  dropped by a lasting, narrowly matching unraisable hook."""
  if not getattr(sys.unraisablehook, "_drops_orbax_reads", False):
    sys.unraisablehook = _drop_failed_restore_noise(sys.unraisablehook)
  logger, drop = pylogging.getLogger("asyncio"), _DropAll()
  logger.addFilter(drop)
  try:
    yield
  finally:
    gc.collect()
    logger.removeFilter(drop)
