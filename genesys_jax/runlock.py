"""One controller per workdir: an exclusive lock on WORKDIR/run.lock, with the holder recorded.

The controller of a run (the loop that proposes, records and selects) holds an `flock` on the lock
file for its whole life; a second launch on the same workdir fails at once with `LockedError`
naming the holder's host and PID, instead of training every verification a second time next to
the first. The kernel drops the lock when its process dies however it dies (SIGKILL included), so
a stale lock file left by a dead run is simply taken over; the holder line it still names is
reported as taken over. Verifier workers share a workdir's store by design and never take this
lock (`read_holder` tells them who the controller is).

The file holds one JSON line: {"host", "pid", "role", "started"} (started: wall-clock time, for
the message only; nothing in the run depends on it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Any, Callable, Iterator

LOCK_FILE = "run.lock"


class LockedError(Exception):
  """The workdir is held by another live controller."""


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, LOCK_FILE)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _parse(text: str) -> dict[str, Any] | None:
  try:
    doc = json.loads(text)
  except ValueError:
    return None
  return doc if isinstance(doc, dict) and "pid" in doc else None


def read_holder(workdir: str) -> dict[str, Any] | None:
  """The holder line recorded in the workdir's lock file (possibly stale), or None."""
  try:
    with open(lock_path(workdir), encoding="utf-8", errors="replace") as f:
      return _parse(f.read())
  except OSError:
    return None


def describe(holder: dict[str, Any] | None, held: bool = True) -> str:
  if not holder:
    return "an unknown process"
  host, pid = holder.get("host", "?"), holder.get("pid", "?")
  text = f"{holder.get('role', 'controller')} pid {pid} on host {host}"
  if held and host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
    text += " (no longer running: a process it started may still hold the lock)"
  started = holder.get("started")
  if isinstance(started, (int, float)):
    text += f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
  return text


def _locked_error(workdir: str, path: str, holder: dict[str, Any] | None) -> LockedError:
  return LockedError(f"{workdir} is in use by another run: {describe(holder)} holds {path}; wait "
                     f"for it to end (or stop it), or use another --workdir")


def check_free(workdir: str) -> None:
  """Raise LockedError if a live run holds the workdir; writes nothing (a fail-fast probe)."""
  path = lock_path(workdir)
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return  # no lock file (or none readable): the run's own acquire decides
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise _locked_error(workdir, path, _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))) from None
  finally:
    os.close(fd)


class RunLock:
  """`RunLock(workdir).acquire()` ... `.release()`; or `with hold(workdir):`."""

  def __init__(self, workdir: str, role: str = "controller"):
    self.workdir, self.role = workdir, role
    self.path = lock_path(workdir)
    self._fd: int | None = None
    self.took_over: dict[str, Any] | None = None  # the stale holder replaced, if any

  def acquire(self) -> "RunLock":
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise _locked_error(self.workdir, self.path, holder) from None
    try:
      self.took_over = _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
      line = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "role": self.role,
                         "started": time.time()}, sort_keys=True) + "\n"
      os.ftruncate(fd, 0)
      os.pwrite(fd, line.encode(), 0)
      os.fsync(fd)
    except BaseException:
      os.close(fd)  # closing drops the lock
      raise
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # no holder line survives a clean exit
    except OSError:
      pass
    os.close(self._fd)  # and the kernel drops the flock
    self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


@contextlib.contextmanager
def hold(workdir: str, role: str = "controller",
         log: Callable[[str], None] | None = None) -> Iterator[RunLock]:
  """Hold the workdir's controller lock for the block; LockedError if another live run holds it."""
  lock = RunLock(workdir, role).acquire()
  try:
    if lock.took_over and log is not None:
      log(f"took over the lock of a run that is no longer running ({describe(lock.took_over, held=False)})")
    yield lock
  finally:
    lock.release()
