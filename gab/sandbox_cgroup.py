"""A memory and process limit for a sandbox's whole process tree: a cgroup of its own.

`create(name, memory_bytes, pids)` makes one cgroup per sandbox, under the parent's own cgroup (or,
where that one cannot have children with controllers, under the hierarchy's root), with the memory
and pids controllers: cgroup v2 where the unified hierarchy has them, else the v1 hierarchy of
each (hybrid machines, e.g. with memory and pids mounted under /sys/fs/cgroup/memory and /pids).
The parent puts the child in (`add`) before the child reads its job, so every process the job
forks is inside and counts: resident memory (page cache and tmpfs pages included, no swap) against
`memory_bytes`, processes and threads against `pids`. The kernel kills a process of the tree when
the tree is over its memory (`oom_kills` counts them; in v2 the whole tree goes at once); `close`
kills whatever is left and removes the cgroup.

Where no cgroup can be made (no such controller, no permission: a non-root parent without a
delegated cgroup) `create` returns None and the reason; the sandbox then limits each process by
rlimits (address space on CPU, processes per uid) and says so in its report.
"""

from __future__ import annotations

import os
import signal
import time

CONTROLLERS = ("memory", "pids")


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


def _hierarchies() -> dict[str, tuple[int, str, str]]:
  """{controller: (version, the parent's cgroup directory, the hierarchy's mount point)} for the
  controllers this machine has."""
  mounts = {}  # (version, controller or None) -> (mount point, mount root)
  with open("/proc/self/mountinfo") as f:
    for line in f:
      left, _, right = line.partition(" - ")
      fields, (fstype, _, options) = left.split(), right.split()[:3]
      if fstype == "cgroup2":
        mounts[(2, None)] = (fields[4], fields[3])
      elif fstype == "cgroup":
        for controller in set(options.split(",")) & set(CONTROLLERS):
          mounts[(1, controller)] = (fields[4], fields[3])
  own = {}  # (version, controller or None) -> the parent's path in that hierarchy
  for line in _read("/proc/self/cgroup").splitlines():
    number, controllers, path = line.split(":", 2)
    for controller in controllers.split(",") if controllers else [None]:
      own[(2 if number == "0" else 1, controller)] = path
  found = {}
  for controller in CONTROLLERS:
    for key in ((2, None), (1, controller)):
      if key not in mounts or key not in own:
        continue
      mount, root = mounts[key]
      if key[0] == 2 and controller not in _read(os.path.join(mount, "cgroup.controllers")).split():
        continue
      relative = os.path.relpath(own[key], root) if own[key].startswith(root) else "."
      found[controller] = (key[0], os.path.normpath(os.path.join(mount, relative)), mount)
      break
  return found


class TreeLimit:
  """One sandbox's cgroup: a directory per hierarchy (one in v2, one per controller in v1)."""

  def __init__(self, dirs: dict[str, tuple[int, str]]):
    self.dirs = dirs  # controller -> (version, directory)

  def _paths(self) -> list[str]:
    return list(dict.fromkeys(d for _, d in self.dirs.values()))

  def set_limits(self, memory_bytes: int, pids: int) -> None:
    version, d = self.dirs["memory"]
    if version == 2:
      _write(os.path.join(d, "memory.max"), str(memory_bytes))
      for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
        if os.path.exists(os.path.join(d, name)):
          _write(os.path.join(d, name), value)
    else:
      _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_bytes))
      if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):  # memory + swap: no swap
        _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_bytes))
    _write(os.path.join(self.dirs["pids"][1], "pids.max"), str(pids))

  def add(self, pid: int) -> None:
    for d in self._paths():
      _write(os.path.join(d, "cgroup.procs"), str(pid))

  def oom_kills(self) -> int:
    version, d = self.dirs["memory"]
    text = _read(os.path.join(d, "memory.events" if version == 2 else "memory.oom_control"))
    counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
    return int(counts.get("oom_kill", 0))

  def close(self, wait_s: float = 10.0) -> None:
    """Kill every process left in the tree and remove the cgroup (a cgroup still busy after
    `wait_s` is left for `remove_stale`)."""
    deadline = time.monotonic() + wait_s
    for d in self._paths():
      while os.path.isdir(d):
        try:
          for pid in _read(os.path.join(d, "cgroup.procs")).split():
            os.kill(int(pid), signal.SIGKILL)
          os.rmdir(d)
        except ProcessLookupError:
          continue
        except OSError:  # EBUSY until the killed processes are reaped
          if time.monotonic() > deadline:
            break
          time.sleep(0.02)


def create(name: str, memory_bytes: int, pids: int) -> tuple[TreeLimit | None, str]:
  """A cgroup `name` with the limits, or (None, why not)."""
  try:
    found = _hierarchies()
  except (OSError, ValueError) as e:
    return None, f"cgroups unreadable: {e}"
  missing = [c for c in CONTROLLERS if c not in found]
  if missing:
    return None, f"no cgroup {' or '.join(missing)} controller"
  dirs, made = {}, []
  try:
    for controller, (version, own, mount) in found.items():
      dirs[controller] = (version, _make(version, controller, [own, mount], name, made))
    limit = TreeLimit(dirs)
    limit.set_limits(memory_bytes, pids)
    return limit, ""
  except OSError as e:
    for d in reversed(made):
      try:
        os.rmdir(d)
      except OSError:
        pass
    return None, f"cannot make a cgroup: {e.strerror or e} ({getattr(e, 'filename', '') or ''})"


def _make(version: int, controller: str, parents: list[str], name: str, made: list[str]) -> str:
  """The cgroup directory `name` under the first parent that can have it (v2: whose children may
  use `controller`; a v2 cgroup holding processes cannot give its children controllers)."""
  error = None
  for parent in dict.fromkeys(parents):
    d = os.path.join(parent, name)
    if d in made:
      return d
    try:
      if version == 2:
        enabled = _read(os.path.join(parent, "cgroup.subtree_control")).split()
        if controller not in enabled:
          _write(os.path.join(parent, "cgroup.subtree_control"), f"+{controller}")
      os.mkdir(d, 0o755)
      made.append(d)
      return d
    except OSError as e:
      error = e
  raise error


def remove_stale(is_stale) -> None:
  """Remove the cgroups that `is_stale(name)` says were left by a parent that was killed."""
  try:
    found = _hierarchies()
  except (OSError, ValueError):
    return
  for version, own, mount in found.values():
    for parent in dict.fromkeys([own, mount]):
      try:
        names = os.listdir(parent)
      except OSError:
        continue
      for name in names:
        d = os.path.join(parent, name)
        if os.path.isdir(d) and is_stale(name):
          TreeLimit({"memory": (version, d)}).close(wait_s=1.0)
