"""The sandbox child's seal: namespaces, a minimal read-only root, limits, privileges.

`isolate(sandbox)` is called by `gab/sandbox_child.py` before it reads any unit code, and uses the
standard library only (nothing may start a thread before `unshare`). The child:
  1. unshares network, mount and PID namespaces (as root; otherwise inside a new user namespace;
     where neither is allowed it goes on without them and says so in its result);
  2. forks, so that its child is PID 1 of the new PID namespace;
  3. builds a new root on a tmpfs and `pivot_root`s into it: read-only binds of what Python needs
     (the interpreter's installation, the virtualenv, the shared-library directories and
     /etc/ld.so.cache, a few device nodes), of the project's packages the job imports (`gab`,
     `train`: not tests/, .git or anything else of the checkout) and of the job's own paths (data
     read-only, checkpoint and log directories writable), a fresh /proc and a size-limited tmpfs on
     /tmp: the only place it can write. Nothing else of the host's filesystem exists inside, so no
     filesystem socket of an outside service (a PostgreSQL socket, a Ray or X11 socket) can be
     reached, and abstract sockets belong to the network namespace, which has none;
  4. sets resource limits (CPU seconds, file size, open files, no core dumps; processes and address
     space where the parent could not put the tree in a cgroup: see gab/sandbox_cgroup.py), drops
     to an unprivileged uid (as root) and enters /tmp/work.
"""

import ctypes
import glob
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
# statvfs flags a remount of a bind must keep (a user namespace may not clear them)
_KEPT = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
         os.ST_NOATIME: 1024, os.ST_NODIRATIME: 2048, os.ST_RELATIME: 1 << 21}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_ROOT = "/tmp"  # where the new root is assembled: a tmpfs mounted there, then pivoted into
SCRATCH_SIZE = "1g"  # the tmpfs on /tmp inside (with a cgroup, its pages count as the tree's memory)
LIBRARIES = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64",
             "/usr/libx32", "/etc/ld.so.cache")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
ACCELERATORS = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/accel*", "/dev/vfio")
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}  # glibc has no wrapper
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


def visible_paths(packages, binds):
  """[(path, writable)] the new root shows: what Python, the job and its device need."""
  platform = os.environ.get("JAX_PLATFORMS", "cpu")
  system = {sys.base_prefix, sys.prefix, *LIBRARIES, *DEVICES}
  if platform != "cpu":
    system.update(p for pattern in ACCELERATORS for p in glob.glob(pattern))
    system.add("/sys")  # device discovery (PCI, NUMA); not recursive: no cgroup or debug mounts
  paths = {p: False for p in system if os.path.lexists(p)}
  paths.update({os.path.join(ROOT, name): False for name in packages})
  paths.update({path: writable for path, writable in binds})
  return sorted(paths.items(), key=lambda item: (item[0].count("/"), item[0]))


def _remount_read_only(path, device):
  kept = 0
  for st_flag, ms_flag in _KEPT.items():
    kept |= ms_flag if os.statvfs(path).f_flag & st_flag else 0
  if not device:
    kept |= MS_NOSUID | MS_NODEV
  _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def build_root(paths, uid):
  """Assemble the new root at NEW_ROOT (a tmpfs), then pivot into it: see the module docstring."""
  # Symlinks of the host's layout (/lib -> usr/lib) are recreated; everything else is opened now,
  # before the tmpfs covers NEW_ROOT (the job's paths may lie under the host's /tmp).
  links = {p: os.readlink(p) for p, _ in paths if os.path.islink(p) and os.path.dirname(p) == "/"}
  fds = [(p, w, os.open(p, os.O_PATH)) for p, w in paths if p not in links]
  _mount(None, "/", None, MS_REC | MS_PRIVATE)
  _mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID, "mode=755,size=16m")
  new = lambda p: NEW_ROOT + p  # noqa: E731
  for path, target in links.items():
    os.symlink(target, new(path))
  for name in ("proc", "tmp", "dev"):
    os.makedirs(new("/" + name), mode=0o755, exist_ok=True)
  _mount("proc", new("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
  _mount("tmpfs", new("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={SCRATCH_SIZE}")
  for fd, name in enumerate(("stdin", "stdout", "stderr")):
    os.symlink(f"/proc/self/fd/{fd}", new(f"/dev/{name}"))
  os.symlink("/proc/self/fd", new("/dev/fd"))
  for path, writable, fd in fds:
    source = f"/proc/self/fd/{fd}"
    if os.path.isdir(source):
      os.makedirs(new(path), mode=0o755, exist_ok=True)
    else:
      os.makedirs(os.path.dirname(new(path)), mode=0o755, exist_ok=True)
      open(new(path), "w").close()
    _mount(source, new(path), None, MS_BIND | (0 if path == "/sys" else MS_REC))
    if not writable:
      _remount_read_only(new(path), device=path.startswith("/dev/"))
    os.close(fd)
  os.makedirs(new("/tmp/work"))
  os.chown(new("/tmp/work"), uid, uid)
  os.chdir(NEW_ROOT)
  number = SYS_PIVOT_ROOT.get(os.uname().machine)
  if number is None:
    raise OSError(f"pivot_root: no system call number known for {os.uname().machine}")
  _check(_libc.syscall(number, b".", b"."), "pivot_root")  # the old root now lies over the new
  _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
  os.chdir("/")
  _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)


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
  if level != "none":
    as_pid1()
    binds = [(b["path"], b["writable"]) for b in sandbox.get("binds", [])]
    paths = visible_paths(sandbox["packages"], binds)
    build_root(paths, sandbox["uid"] if level == "root" else 0)
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
