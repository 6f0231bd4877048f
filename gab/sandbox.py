"""Run untrusted design code (code units) in an isolated child process; report every way out.

`check_design(design_json, checker_cfg, rung)` checks a design with code units and returns the
checker's report dict: one `python -I gab/sandbox_child.py` registers the code units and traces
the programs the checks run (the only process that runs the design's Python), a second one judges
those programs without running any of it (`gab.checker.verify_in_child`). Each child:
- starts in its own session (process group) with a scrubbed environment: PATH, HOME and TMPDIR (its
  temporary directory), LANG, JAX_PLATFORMS, XLA_FLAGS, CUDA_VISIBLE_DEVICES if set, and nothing
  else: no API keys, tokens or cloud credentials;
- unshares network, mount and PID namespaces and pivots into a minimal read-only root (see
  gab/sandbox_seal.py): no network at all (not even loopback), no filesystem socket of any outside
  service, a fresh /proc, only what Python needs and the project's packages the job imports (not
  the rest of the checkout), the job's own directories bound in, a tmpfs on /tmp as the only
  writable place, and, when run as root, an unprivileged uid. Where namespaces are unavailable (no
  root and no unprivileged user namespaces) it runs without them, and the report carries a
  `sandbox` warning;
- runs in a cgroup of its own (gab/sandbox_cgroup.py): memory and processes limited for the whole
  process tree, however many processes it forks; where none can be made, per-process rlimits
  (address space on CPU only, never where CUDA runs; processes per uid) and a `sandbox` warning in
  the report; always CPU seconds, file size and open files;
- is killed with its whole process group at the wall-clock timeout or when it writes more than
  `MAX_OUTPUT` bytes.
Every failure comes back as a failed `sandbox` check: `sandbox: timeout`, `sandbox: memory`,
`sandbox: output too large`, `sandbox: cpu time limit`, `sandbox: host callback ... refused`, ...;
a lint failure as a failed `format` check (`sandbox: forbidden import os at line 3 of ...`),
without starting a process.

`train.sandboxed.train_design(...)` trains a design with code units the same way (generous limits,
the data directory read-only and its checkpoint and log directories writable) and returns its
metrics: the child runs a job of a higher layer by the "module:function" its `call` names.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from gab import sandbox_cgroup

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
MAX_OUTPUT = 1 << 20          # bytes of result (stdout) before the child is killed
MAX_LOG = 16 << 20            # bytes of stderr before the child is killed; the last 64 KB are kept
# Started as root, each child drops to its own unused uid (from SANDBOX_UID + [0, 65536)), so the
# process limit of one sandbox (RLIMIT_NPROC counts per uid) never starves another.
SANDBOX_UID = 200_000
# memory_gb: the whole process tree's resident memory (a cgroup), or each process's address space
# where no cgroup can be made (on CPU only: never where CUDA maps device memory).
CHECK_LIMITS = dict(cpu=600, fsize=256 << 20, nofile=512, nproc=512, memory_gb=3.0)
TRAIN_LIMITS = dict(cpu=None, fsize=4 << 30, nofile=1024, nproc=1024, memory_gb=8.0)
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES",
            "TF_CPP_MIN_LOG_LEVEL")
_MEMORY = re.compile(r"MemoryError|RESOURCE_EXHAUSTED|[Oo]ut of memory|bad_alloc|Cannot allocate memory"
                     r"|failed to allocate|Allocator .* ran out")


class SandboxError(RuntimeError):
  """The sandbox ended without a result; the message is the named reason (`sandbox: ...`)."""


def scrubbed_env(home: str) -> dict[str, str]:
  env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
  env.setdefault("PATH", os.defpath)
  env.update(HOME=home, TMPDIR=home, PYTHONHASHSEED="0", MALLOC_ARENA_MAX="2",
             TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "3"))
  env.setdefault("JAX_PLATFORMS", _platform())
  return env


def _platform() -> str:
  if os.environ.get("JAX_PLATFORMS"):
    return os.environ["JAX_PLATFORMS"]
  if "jax" in sys.modules:
    return sys.modules["jax"].default_backend()
  return "cpu"


def _rlimits(limits: dict[str, Any], platform: str, tree: bool) -> dict[str, int | None]:
  """The child's rlimits: with a cgroup for the tree (`tree`), memory and processes are its."""
  out = {k: v for k, v in limits.items() if k != "memory_gb" and not (tree and k == "nproc")}
  if not tree and platform == "cpu" and limits.get("memory_gb"):
    out["as"] = int(limits["memory_gb"] * (1 << 30))
  return out


def packages(job: dict[str, Any]) -> list[str]:
  """The project's top-level packages the child imports: gab, and the package of a `call`."""
  return sorted({"gab"} | ({job["call"].split(".")[0]} if job.get("call") else set()))


def run_child(job: dict[str, Any], *, timeout_s: float, limits: dict[str, Any],
              binds: list[tuple[str, bool]] = ()) -> dict[str, Any]:
  """Run one job in the child; its result dict, or a SandboxError naming why there is none.

  The result's "tree_limit" says whether a cgroup held the whole process tree ("cgroup": true)
  or why not ("why")."""
  _remove_stale()
  home = tempfile.mkdtemp(prefix=f"gab-sandbox-{os.getpid()}-")
  env = scrubbed_env(home)
  uid = SANDBOX_UID + secrets.randbelow(1 << 16)  # not a result-affecting choice: any unused uid
  writable = [p for p, w in binds if w]
  _chown(writable, uid)
  tree, why = sandbox_cgroup.create(os.path.basename(home), int(limits["memory_gb"] * (1 << 30)),
                                    int(limits["nproc"]))
  over = (lambda: tree.oom_kills() > 0) if tree is not None else (lambda: False)
  job = dict(job, sandbox=dict(uid=uid, limits=_rlimits(limits, env["JAX_PLATFORMS"], tree is not None),
                               packages=packages(job),
                               binds=[dict(path=os.path.abspath(p), writable=w) for p, w in binds]))
  try:
    proc = subprocess.Popen([sys.executable, "-I", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=home, env=env, start_new_session=True,
                            close_fds=True)
    try:
      if tree is not None:
        tree.add(proc.pid)  # the child waits for its job on stdin: nothing has run yet
      out, log, reason = _communicate(proc, json.dumps(job).encode(), timeout_s, over)
      reason = "memory" if over() else reason  # the kernel killed a process of the tree for memory
    finally:
      _kill_group(proc)
  finally:
    if tree is not None:
      tree.close()
    _chown(writable, os.geteuid())
    shutil.rmtree(home, ignore_errors=True)
  if reason:
    raise SandboxError(f"sandbox: {reason}")
  line = out.decode(errors="replace").strip().splitlines()
  if line:
    try:
      result = json.loads(line[-1])
    except json.JSONDecodeError:
      result = None
    if isinstance(result, dict) and "sandbox_error" in result:
      raise SandboxError(f"sandbox: {result['sandbox_error']}")
    if isinstance(result, dict):
      return dict(result, tree_limit=dict(cgroup=tree is not None, why=why))
  raise SandboxError(f"sandbox: {_exit_reason(proc.returncode, log.decode(errors='replace'))}")


def _communicate(proc, stdin: bytes, timeout_s: float, over_memory) -> tuple[bytes, bytes, str]:
  """Feed stdin, collect capped stdout/stderr until exit, or until `over_memory()` (polled each
  second); (stdout, stderr tail, reason or '')."""
  try:
    proc.stdin.write(stdin)
    proc.stdin.close()
  except BrokenPipeError:
    pass
  sel = selectors.DefaultSelector()
  sel.register(proc.stdout, selectors.EVENT_READ, "out")
  sel.register(proc.stderr, selectors.EVENT_READ, "log")
  out, log, n_log = bytearray(), bytearray(), 0
  deadline = time.monotonic() + timeout_s
  while sel.get_map():
    left = deadline - time.monotonic()
    if left <= 0:
      return bytes(out), bytes(log), "timeout"
    if over_memory():
      return bytes(out), bytes(log), "memory"
    for key, _ in sel.select(min(left, 1.0)):
      chunk = os.read(key.fileobj.fileno(), 1 << 16)
      if not chunk:
        sel.unregister(key.fileobj)
      elif key.data == "out":
        out += chunk
        if len(out) > MAX_OUTPUT:
          return bytes(out), bytes(log), "output too large"
      else:
        n_log += len(chunk)
        log = (log + chunk)[-(64 << 10):]
        if n_log > MAX_LOG:
          return bytes(out), bytes(log), "output too large"
  try:
    proc.wait(max(0.1, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    return bytes(out), bytes(log), "timeout"
  return bytes(out), bytes(log), ""


def _kill_group(proc) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  proc.wait()
  for f in (proc.stdout, proc.stderr):
    f.close()


def _exit_reason(returncode: int, log: str) -> str:
  if _MEMORY.search(log):
    return "memory"
  if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and "SIGXCPU" in log):
    return "cpu time limit"
  if returncode == -signal.SIGXFSZ:
    return "file size limit"
  last = log.strip().splitlines()[-1][:300] if log.strip() else ""
  how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
  return f"child {how}" + (f": {last}" if last else "")


def _stale(name: str) -> bool:
  """A temp dir or cgroup of a sandbox whose parent is gone."""
  m = re.match(r"gab-sandbox-(\d+)-", name)
  return bool(m) and not os.path.exists(f"/proc/{m.group(1)}")


def _remove_stale() -> None:
  """Temp dirs and cgroups left by a parent that was killed (SIGKILL skips its cleanup); its
  children died with it (PR_SET_PDEATHSIG)."""
  top = tempfile.gettempdir()
  for name in os.listdir(top):
    if _stale(name):
      shutil.rmtree(os.path.join(top, name), ignore_errors=True)
  sandbox_cgroup.remove_stale(_stale)


def _chown(paths, uid: int) -> None:
  if os.geteuid() != 0:
    return
  for top in paths:
    for root, dirs, files in os.walk(top):
      for name in [root] + [os.path.join(root, n) for n in dirs + files]:
        try:
          os.lchown(name, uid, uid)
        except OSError:
          pass


# -- the checker, sandboxed ----------------------------------------------------------------------
def _failed(name: str, message: str, hint: str) -> dict[str, Any]:
  return {"passed": False, "checks": [{"name": name, "status": "fail", "message": message,
                                       "hint": hint}], "sizing": {}}


def lint_report(design_json: str) -> dict[str, Any] | None:
  """A failed `format` report if the design is unreadable or a unit fails the lint, else None."""
  from gab import codeunits  # pylint: disable=g-import-not-at-top
  from gab.tree import DesignError, design_units  # pylint: disable=g-import-not-at-top
  try:
    units = design_units(design_json)
  except DesignError as e:
    return _failed("format", f"sandbox: {e}", "fix the design file; embedded sources must match their hashes")
  for kind, source in sorted(units.items()):
    problems = codeunits.lint(source)
    if problems:
      m = re.match(r"line (\d+): (.*)", problems[0])
      what = f"{m.group(2)} at line {m.group(1)}" if m else problems[0]
      return _failed("format", f"sandbox: {what} of code unit {kind}",
                     "code units may import only " + ", ".join(codeunits.ALLOWED_IMPORTS) +
                     " and use no file, process, network, eval or host-callback access")
  return None


def as_dict(cfg):
  """A config (ConfigDict, dict or None) as a plain dict for a job's JSON."""
  if cfg is None:
    return None
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def check_design(design_json: str, checker_cfg=None, rung=None, *, timeout_s: float = 300,
                 fingerprint: bool = False) -> dict[str, Any]:
  """The checker's report for the design (see the module docstring), in two children: the sandbox
  registers its code units and traces the programs the checks run (`gab.checks.trace`), a second,
  trusted one judges them without running any of the design's Python (`gab.checker.verify_in_child`).
  Each child has `timeout_s`.

  With `fingerprint`, a passing report also carries "fingerprint" (`gab.canonical.fingerprint`,
  of the canonical block's exported program).
  """
  bad = lint_report(design_json)
  if bad is not None:
    return bad
  job = dict(mode="call", design=design_json, cfg=as_dict(checker_cfg), rung=as_dict(rung),
             fingerprint=fingerprint)
  programs = tempfile.mkdtemp(prefix=f"gab-sandbox-{os.getpid()}-programs-")
  try:
    os.chmod(programs, 0o755)
    try:
      traced = run_child(dict(job, call=TRACE, out=programs), timeout_s=timeout_s,
                         limits=CHECK_LIMITS, binds=[(programs, True)])
      failed = _failure(traced)
      if failed is not None:
        return failed
      judged = run_child(dict(job, call=VERIFY, programs=programs), timeout_s=timeout_s,
                         limits=CHECK_LIMITS, binds=[(programs, False)])
    except SandboxError as e:
      return _failed("sandbox", str(e), _HINTS.get(str(e), "the design's code units must run within "
                                                            "the sandbox's limits"))
    return _failure(judged) or _report(judged, traced)
  finally:
    shutil.rmtree(programs, ignore_errors=True)


TRACE = "gab.checker:trace_in_child"         # the sandbox: registers the code units, traces
VERIFY = "gab.checker:verify_in_child"      # the trusted child: declares them, judges the programs
_HINTS = {"sandbox: timeout": "the design's code must finish its check within the timeout (an "
                              "endless loop or sleep?)",
          "sandbox: memory": "the design's code must fit the sandbox's memory limit",
          "sandbox: output too large": "code units must not print (much)"}


def _failure(result: dict[str, Any]) -> dict[str, Any] | None:
  """A failed report for a child that ended without its result (a refused callback, an error)."""
  if result.get("violations"):
    return _failed("sandbox", f"sandbox: host callback {', '.join(result['violations'])} refused",
                   "code units run inside compiled programs only: no host callbacks")
  if "error" in result:
    reason = "memory" if _MEMORY.search(result["error"]) else f"the child failed: {result['error']}"
    return _failed("sandbox", f"sandbox: {reason}", _child_hint(result["error"]))
  return None


def _child_hint(error: str) -> str:
  """What to repair when the child failed outside a check: a code unit whose module does not run."""
  if "CodeUnitError" in error and "NameError" in error:
    return ("a code unit's module must run on its own: import every name it uses (UnitModule from "
            "gab.units.base, flax.linen as nn, jax.numpy as jnp, helpers from gab.units.*) or define it")
  if "CodeUnitError" in error:
    return "the code unit's module must execute as written: fix the line the message names"
  return "see the message"


def _report(judged: dict[str, Any], traced: dict[str, Any]) -> dict[str, Any]:
  report = judged["result"]
  info = traced.get("isolation", {})
  if info.get("isolation") == "none":
    report["checks"].append({"name": "sandbox", "status": "warn",
                             "message": f"sandbox: no namespaces ({info.get('why')}): network and "
                                        f"files were not isolated", "hint": "run as root or allow "
                                        "unprivileged user namespaces"})
  if not traced.get("tree_limit", {}).get("cgroup", True):
    report["checks"].append({"name": "sandbox", "status": "warn",
                             "message": f"sandbox: {traced['tree_limit']['why']}: memory was limited "
                                        f"per process (address space, on CPU only) and processes "
                                        f"per uid, not for the whole process tree",
                             "hint": "run as root on a machine with cgroup memory and pids "
                                     "controllers, or delegate a cgroup v2 subtree to this user"})
  if _MEMORY.search(" ".join(c["message"] for c in report["checks"] if c["status"] == "fail")):
    report["checks"].append({"name": "sandbox", "status": "fail", "message": "sandbox: memory",
                             "hint": _HINTS["sandbox: memory"]})
    report["passed"] = False
  return report


class DesignFailure(RuntimeError):
  """A design with code units failed in a sandboxed job (training); the message names why."""
