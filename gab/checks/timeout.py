"""Run one check under a wall-clock limit, so a design that hangs fails instead of hanging the loop.

The check runs in a daemon thread; past `timeout_s` the caller gets `None` and the thread is sent an
exception (`PyThreadState_SetAsyncExc`), which stops a check stuck in Python code (a unit that loops
while it is traced). A check stuck inside one XLA computation cannot be interrupted from Python: it
is abandoned (its thread keeps the core until the computation ends or the process exits; the CLI
exits at once after printing its report, and a sandboxed caller can kill the process).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable


class CheckTimeout(Exception):
  """Raised inside a check's thread when its time is up."""


def run_with_timeout(fn: Callable[[], Any], timeout_s: float) -> tuple[bool, Any]:
  """(finished, result); an exception from `fn` is re-raised here. timeout_s <= 0: no limit."""
  if not timeout_s or timeout_s <= 0:
    return True, fn()
  box: dict[str, Any] = {}

  def target():
    try:
      box["result"] = fn()
    except BaseException as e:  # noqa: BLE001 - handed to the caller
      box["error"] = e

  thread = threading.Thread(target=target, daemon=True, name="gab-check")
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                               ctypes.py_object(CheckTimeout))
    thread.join(1.0)
    return False, None
  if "error" in box:
    raise box["error"]
  return True, box.get("result")
