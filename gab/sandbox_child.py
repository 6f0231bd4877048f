"""The sandbox's child: `python -I gab/sandbox_child.py` (run by `gab.sandbox`, never by hand).

It reads one job (JSON) from stdin, then, before importing anything but the standard library:
  1. unshares network, mount and PID namespaces (as root; otherwise inside a new user namespace;
     where neither is allowed it goes on without them and says so in the result);
  2. forks, so that its child is PID 1 of the new PID namespace (when it ends, the kernel kills
     every process left in it); each process asks to be killed when its parent dies, so nothing
     outlives a controller that was killed;
  3. mounts a fresh tmpfs on /tmp, /var/tmp and /dev/shm (all it writes vanishes with it), a fresh
     /proc (no other process's environment is visible), and the job's directories (read-only, or
     read-write for checkpoints) bound back at their own paths; a tmpfs also covers /root and the
     parent's home directory, with only the Python installation and the project bound back;
  4. sets resource limits (CPU seconds, file size, open files, processes, no core dumps; address
     space when the job asks: CPU only), drops to an unprivileged uid (as root) and enters /tmp/work;
  5. replaces JAX's host-callback entry points by ones that refuse (and record the attempt).
Then it runs the function the job names in "call" (`gab.checks.trace.trace_in_child`: register the
code units and trace; `gab.checker.verify_in_child`: judge the traced programs, no unit code; the
training jobs of `train.sandboxed`) and writes one JSON result to the original stdout; everything
else the job prints goes to stderr.
"""

import ctypes
import json
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
VIOLATIONS = []


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


def neutralise_host_callbacks():
  """Host callbacks run Python from inside compiled programs: refuse them (and remember who tried)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.experimental  # pylint: disable=g-import-not-at-top

  def refuse(name):
    def refused(*args, **kwargs):
      del args, kwargs
      VIOLATIONS.append(name)
      raise RuntimeError(f"sandbox: host callback {name} refused")
    return refused

  targets = [(jax.debug, "callback", "jax.debug.callback"), (jax.debug, "print", "jax.debug.print"),
             (jax, "pure_callback", "jax.pure_callback"),
             (jax.experimental, "io_callback", "jax.experimental.io_callback")]
  try:
    from jax._src import callback, debugging  # pylint: disable=g-import-not-at-top
    targets += [(debugging, "debug_callback", "jax.debug.callback"),
                (debugging, "debug_print", "jax.debug.print"),
                (callback, "pure_callback", "jax.pure_callback"),
                (callback, "io_callback", "jax.experimental.io_callback")]
  except ImportError:
    pass
  for module, attr, name in targets:
    if hasattr(module, attr):
      setattr(module, attr, refuse(name))


def run_call(job):
  """The job's function, named by the parent as "module:function" in `call` and imported only
  here, after isolation."""
  import importlib  # pylint: disable=g-import-not-at-top
  module, _, name = job["call"].partition(":")
  return getattr(importlib.import_module(module), name)(job)


def die_with_parent():
  _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by a uid change: set again after one


def main():
  die_with_parent()
  job = json.loads(sys.stdin.buffer.read())
  out = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)  # whatever the job prints goes to stderr; the result alone to the original stdout
  try:
    info = isolate(job["sandbox"])
  except OSError as e:
    out.write(json.dumps({"sandbox_error": f"isolation failed: {e}"}) + "\n")
    out.flush()
    return 3
  result = {"isolation": info}
  try:
    neutralise_host_callbacks()
    result["result"] = run_call(job)
  except MemoryError as e:
    result["error"] = f"MemoryError: {e}"
  except Exception as e:  # noqa: BLE001 - the parent turns this into a named reason
    text = str(e).strip().splitlines()
    result["error"] = f"{type(e).__name__}: {text[0][:2000] if text else ''}"
    result["design_failure"] = _design_failure(e)
  if VIOLATIONS:
    result["violations"] = sorted(set(VIOLATIONS))
  out.write(json.dumps(result, sort_keys=True) + "\n")
  out.flush()
  return 0


def _design_failure(e):
  from gab.tree import DesignError  # pylint: disable=g-import-not-at-top
  try:
    import jax  # pylint: disable=g-import-not-at-top
    runtime = (jax.errors.JaxRuntimeError,)
  except (ImportError, AttributeError):
    runtime = ()
  return isinstance(e, (FloatingPointError, DesignError) + runtime)


if __name__ == "__main__":
  sys.exit(main())
