"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

`write(path, data)` writes a temporary sibling (unique per process and call, so processes writing
the same file side by side do not trample each other's temporary), flushes it to disk and renames
it over `path`; on any failure (a full disk, an interrupt) the temporary is removed and the old
file is untouched. An OSError without a file name (a failed `write()`) is raised naming the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write(path: str, data: str | bytes, fsync: bool = True) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
      f.flush()
      if fsync:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(e, OSError) and not e.filename:
      raise OSError(e.errno, e.strerror, path) from None
    raise
