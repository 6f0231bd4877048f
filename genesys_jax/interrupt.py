"""Ctrl-C and SIGTERM end a run with one line and exit code 130, in every phase.

`exits_cleanly()` wraps a command's work: SIGINT and SIGTERM raise `Interrupted` (a
KeyboardInterrupt) in the main thread, wherever it is. The work in progress is abandoned as a kill
would abandon it, and what was written stays whole: the store commits one transaction per record
(an open one rolls back), Orbax commits each checkpoint by renaming it, and the `finally` blocks on
the way out close the store and release the workdir's lock. The command then prints

  interrupted at <phase>; run the same command to resume

on stderr and leaves with `os._exit(130)`: a check abandoned mid-computation still runs on its
timeout thread (gab/checks/timeout.py), and letting the interpreter shut down under it aborts the
process ("Fatal Python error: Aborted"). A second signal while the first unwinds exits at once with
the same line. Python runs a signal handler wherever the main thread is, a garbage-collector callback
included, where an exception is only reported ("Exception ignored in ..."): an `Interrupted` lost
there is delivered again (`_raise_again_if_swallowed`), so no interrupt is ever dropped.

`at(phase)` names what the run is doing (set by the loop at each stage), for that line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator

EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_phase = ["starting"]


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM arrived (raised in the main thread)."""


def at(phase: str | Callable[[], str]) -> None:
  """What the run is doing now, named in the line an interrupt prints (a callable: worded when the
  interrupt comes, e.g. with the step a training resumes from)."""
  _phase[0] = phase


def line() -> str:
  phase = _phase[0]
  return f"interrupted at {phase() if callable(phase) else phase}; run the same command to resume"


def _leave() -> None:
  print(line(), file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(EXIT_CODE)  # pylint: disable=protected-access  (see the module docstring)


def _first(signum, frame) -> None:
  del frame
  for s in SIGNALS:
    signal.signal(s, _again)
  raise Interrupted(signal.Signals(signum).name)


def _again(signum, frame) -> None:
  del signum, frame
  _leave()


def _raise_again_if_swallowed(previous):
  """An unraisable-exception hook: Python runs a signal handler at any point, a garbage collector
  callback (JAX has one) or a `__del__` included, and only reports an exception raised there; an
  `Interrupted` reported so is delivered again, to be raised outside it."""
  def hook(unraisable):
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, Interrupted):
      for s in SIGNALS:
        signal.signal(s, _first)
      # From another thread, a moment later: a signal sent from here would be handled (and its
      # exception swallowed) at once, still inside the callback or this hook.
      again = threading.Timer(0.01, os.kill, (os.getpid(), signal.Signals[str(unraisable.exc_value)]))
      again.daemon = True
      again.start()
      return
    previous(unraisable)
  return hook


@contextlib.contextmanager
def exits_cleanly() -> Iterator[None]:
  """Run the body; on SIGINT/SIGTERM (or a KeyboardInterrupt), unwind it, print one line, exit 130."""
  previous = {s: signal.getsignal(s) for s in SIGNALS}
  previous_hook = sys.unraisablehook
  sys.unraisablehook = _raise_again_if_swallowed(previous_hook)
  for s in SIGNALS:
    signal.signal(s, _first)
  try:
    yield
  except KeyboardInterrupt:
    _leave()
  finally:
    sys.unraisablehook = previous_hook
    for s, handler in previous.items():
      signal.signal(s, handler)
