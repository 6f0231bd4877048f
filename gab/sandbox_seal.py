"""The sandbox child's seal: namespaces, filesystems, limits and privileges (standard library only).

`isolate(sandbox)` is called by `gab/sandbox_child.py` before it reads any unit code; see that
module's docstring for the steps.
"""

import ctypes
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc, what):
  if rc != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None):
  enc = lambda s: None if s is None else s.encode()  # noqa: E731
  _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
         f"mount {target}")


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


def unshare(sandbox_uid):
  """Enter new namespaces; returns the level reached: 'root', 'user' or 'none' (and why)."""
  flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
  if os.geteuid() == 0 and _libc.unshare(flags) == 0:
    return "root", ""
  uid, gid = os.geteuid(), os.getegid()
  if _libc.unshare(flags | CLONE_NEWUSER) == 0:
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
    return "user", ""
  return "none", f"unshare: {os.strerror(ctypes.get_errno())}"


def as_pid1():
  """Fork; the parent waits and exits as the child did, the child goes on as PID 1."""
  pid = os.fork()
  if pid == 0:
    die_with_parent()
    return
  signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
  _, status = os.waitpid(pid, 0)
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
  os._exit(os.waitstatus_to_exitcode(status))


def _under(path, top):
  return path == top or path.startswith(top.rstrip("/") + "/")


def mount_filesystems(binds, hidden, uid):
  """A fresh tmpfs over every `hidden` directory (scratch dirs, home directories: what the job
  writes there vanishes, what others keep there is not visible), a fresh /proc, and the paths the
  job needs bound back at their own paths (read-only unless writable)."""
  hidden = sorted({h for h in hidden if os.path.isdir(h)})
  needed = [(p, False) for p in {sys.base_prefix, sys.prefix, ROOT} if any(_under(p, h) for h in hidden)]
  binds = sorted(set(binds) | set(needed), key=lambda b: len(b[0]))
  fds = [os.open(path, os.O_PATH) for path, _ in binds]
  _mount(None, "/", None, MS_REC | MS_PRIVATE)
  for top in hidden:
    mode = "1777" if top in ("/tmp", "/var/tmp", "/dev/shm") else "755"
    _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, f"size=1g,mode={mode}")
  _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
  for (path, writable), fd in zip(binds, fds):
    # The fd was opened before the tmpfs covered its directory, so it still names the host's.
    if not os.path.exists(path):
      if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(path)
      else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    if not writable:
      _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.close(fd)
  os.makedirs("/tmp/work", exist_ok=True)
  os.chown("/tmp/work", uid, uid)


def set_limits(limits, drop_uid):
  for name, value in limits.items():
    if value is None or (name == "nproc" and not drop_uid):
      continue
    res = getattr(resource, f"RLIMIT_{name.upper()}")
    resource.setrlimit(res, (int(value), int(value)))
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def drop_privileges(uid):
  os.setgroups([])
  os.setgid(uid)
  os.setuid(uid)


def isolate(sandbox):
  level, why = unshare(sandbox["uid"])
  binds = [(b["path"], b["writable"]) for b in sandbox.get("binds", [])]
  if level != "none":
    as_pid1()
    hidden = ["/tmp", "/var/tmp", "/dev/shm", "/root"] + list(sandbox.get("hide", []))
    mount_filesystems(binds, hidden, sandbox["uid"] if level == "root" else 0)
    os.chdir("/tmp/work")
    os.environ["HOME"] = os.environ["TMPDIR"] = "/tmp/work"
  set_limits(sandbox["limits"], drop_uid=level == "root")
  if level == "root":
    drop_privileges(sandbox["uid"])
  die_with_parent()
  sys.path.insert(0, ROOT)
  return {"isolation": level, "why": why}



def die_with_parent():
  _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by a uid change: set again after one
