"""The sandbox: designs with code units are checked in an isolated child; hostile units are contained.

Each sandboxed check starts a fresh JAX process (about 5-10 s on 2 cores), so hostile behaviours
share children where they can. The hostile units reach past the lint on purpose (a string
annotation evaluated by `typing.get_type_hints` reaches any attribute, e.g. the real `__import__`):
the lint is not the boundary, the process is.
"""

import ast
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from gab import codeunits, registry, sandbox, sandbox_cgroup
from gab.tree import Unit, design_to_json

U = Unit.make
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECRET = "fake-gemini-key-do-not-leak-4242"
HEADER = '''"""A hostile unit."""
import functools
import typing
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from gab.units.base import UnitModule

KIND = dict(name="Hostile", role="sequence_mixer", params={}, slots=[], reads=[], writes=[])


def _imp(a: "functools.__builtins__['__import__']"):
  pass


IMPORT = typing.get_type_hints(_imp)["a"]  # the real __import__, past the lint
'''
IDENTITY = '''

class Hostile(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    return x, z
'''


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
  monkeypatch.setenv("GEMINI_API_KEY", SECRET)
  monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


@pytest.fixture
def forget():
  yield
  for kind in list(codeunits.known()):
    codeunits.forget(kind)


def design_json(source: str) -> str:
  kind = codeunits.declare(source)
  tree = registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(kind)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U("GatedMLP")])])]))
  return design_to_json(tree, "hostile", codeunits.sources_for(tree))


def failed(report):
  assert not report["passed"], report
  bad = [c for c in report["checks"] if c["status"] == "fail"]
  assert len(bad) == 1 and "\n" not in bad[0]["message"], bad
  return bad[0]


def test_three_code_units_pass_the_checker_in_the_sandbox(forget):
  kinds = [codeunits.declare(open(p).read()) for p in sorted(glob.glob(os.path.join(HERE, "code_units", "*.py")))]
  dc, sq, ts = kinds
  tree = registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(dc)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(ts)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(sq, expansion=3)])])]))
  small = dict(d_model=64, n_blocks=1, batch_size=2, seq_len=32, target_params=0)  # a quick rung
  report = sandbox.check_design(design_to_json(tree, None, codeunits.sources_for(tree)), None, small,
                                fingerprint=True)
  assert report["passed"], report
  assert [c["name"] for c in report["checks"]][:3] == ["format", "init", "forward"]
  assert report["sizing"]["fits"] and len(report["fingerprint"]) == 16
  assert not codeunits.is_executable(dc)  # this process only declared them


def _listen(address):
  """A real listening socket (TCP on 127.0.0.1, or AF_UNIX on a path or an abstract name) and the
  connections it accepted, served by a thread until the socket is closed."""
  family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
  server = socket.socket(family)
  server.bind(address)
  server.listen(4)
  hits = []

  def serve():
    try:
      while True:
        hits.append(server.accept())
    except OSError:  # closed: the test is over
      pass
  threading.Thread(target=serve, daemon=True).start()
  return server, hits


def test_env_files_sockets_and_network_are_out_of_reach(forget, tmp_path):
  secret_file = tmp_path / "secret.txt"
  secret_file.write_text(SECRET)
  tag = f"gab-pwned-{os.getpid()}"
  # Writes anywhere but the sandbox's own /tmp: the host's scratch dirs, the root, the checkout,
  # the virtualenv. None may happen (the root is read-only, none of the host's /tmp is inside).
  outside = [str(tmp_path / tag), f"/run/lock/{tag}", f"/{tag}", os.path.join(ROOT, "gab", tag),
             os.path.join(HERE, tag), os.path.join(sys.prefix, tag), f"/var/tmp/{tag}"]
  # Only the packages the child imports are inside: not the tests, the README or the git data.
  repo = [os.path.join(ROOT, "README.md"), os.path.join(HERE, "test_sandbox.py"),
          os.path.join(ROOT, ".git"), os.path.join(ROOT, "configs", "ladder.py")]
  sock_dir = tempfile.mkdtemp(prefix="gab-sock-")  # short: AF_UNIX paths are at most 107 bytes
  tcp, tcp_hits = _listen(("127.0.0.1", 0))
  unix, unix_hits = _listen(os.path.join(sock_dir, "service.sock"))  # e.g. PostgreSQL's socket
  abstract, abstract_hits = _listen(f"\0{tag}")
  port = tcp.getsockname()[1]
  probe = f'''
def _env(a: "functools.__builtins__['__import__']('os').environ"):
  pass


def _connect(family, address):
  s = IMPORT("socket").socket(family)
  s.settimeout(5)
  s.connect(address)
  return "connected"


def _probe():
  env = typing.get_type_hints(_env)["a"]
  o = IMPORT("os")
  results = dict(env=sorted(env), home=env.get("HOME"), root=sorted(o.listdir("/")))
  tries = [("read", lambda: open({str(secret_file)!r}).read()),
           ("proc_environ", lambda: open("/proc/1/environ").read()),
           ("scratch", lambda: open("/tmp/work/mine", "w").write("x")),
           ("tcp", lambda: _connect(IMPORT("socket").AF_INET, ("127.0.0.1", {port}))),
           ("unix", lambda: _connect(IMPORT("socket").AF_UNIX, {unix.getsockname()!r})),
           ("abstract", lambda: _connect(IMPORT("socket").AF_UNIX, {abstract.getsockname()!r}))]
  tries += [(f"write {{p}}", lambda p=p: open(p, "w").write("x")) for p in {outside!r}]
  tries += [(f"read {{p}}", lambda p=p: o.stat(p)) for p in {repo!r}]
  for name, fn in tries:
    try:
      results[name] = "ok: " + str(fn())[:40]
    except Exception as e:
      results[name] = ["refused", repr(e)[:50]]
  raise ValueError("RESULTS " + repr(results))


PROBE = _probe()
'''.replace("open(", "IMPORT('builtins').open(")
  try:
    report = sandbox.check_design(design_json(HEADER + probe + IDENTITY))
  finally:
    for server in (tcp, unix, abstract):
      server.close()
    shutil.rmtree(sock_dir)
  check = failed(report)
  text = json.dumps(report)
  assert check["name"] == "sandbox" and "RESULTS" in check["message"], check
  text = check["message"][check["message"].index("RESULTS ") + 8:]
  results = ast.literal_eval(text.rpartition(" (at line ")[0] or text)  # the unit's failing line follows
  assert SECRET not in text and "GEMINI" not in text and "AWS_" not in text
  assert results["home"] == "/tmp/work" and results["scratch"] == "ok: 1"  # its own /tmp: writable
  assert set(results["root"]) <= {"dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "tmp",
                                  "usr", *{p.split("/")[1] for p in (sys.base_prefix, sys.prefix, ROOT)}}
  refused = ["read", "tcp", "unix", "abstract"] + [f"write {p}" for p in outside] + [f"read {p}" for p in repo]
  for name in refused:
    assert results[name][0] == "refused", (name, results[name])
  assert not any(os.path.exists(p) for p in outside)
  assert not tcp_hits and not unix_hits and not abstract_hits  # nothing connected to any server


def test_memory_is_limited_for_the_whole_process_tree(forget, monkeypatch):
  """Four forked children of 400 MB each: every one is within any per-process limit of 1 GB, the
  tree is not."""
  probe, why = sandbox_cgroup.create(f"gab-sandbox-{os.getpid()}-probe", 1 << 30, 64)
  if probe is None:
    pytest.skip(f"no cgroup for the sandbox's tree here ({why}): memory is limited per process")
  probe.close()
  monkeypatch.setitem(sandbox.CHECK_LIMITS, "memory_gb", 1.0)
  hog = HEADER + '''
def _hog():
  o = IMPORT("os")
  children = []
  for _ in range(4):
    pid = o.fork()
    if pid == 0:
      block = np.ones(400 * 2**20 // 8)  # every page written
      IMPORT("time").sleep(5 * block[0])
      o.kill(o.getpid(), 9)
    children.append(pid)
  for pid in children:
    o.waitpid(pid, 0)


HOG = _hog()
''' + IDENTITY
  start = time.monotonic()
  check = failed(sandbox.check_design(design_json(hog)))
  assert check["name"] == "sandbox" and check["message"] == "sandbox: memory", check
  assert time.monotonic() - start < 60  # stopped when the kernel killed for memory, not at the end


def test_host_callbacks_are_refused_even_past_the_lint(forget):
  source = HEADER + '''

def _cb(a: "jax.debug.callback"):
  pass


CALLBACK = typing.get_type_hints(_cb)["a"]


class Hostile(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    CALLBACK(lambda v: None, x)
    return x, z
'''
  assert codeunits.lint(source) == []
  check = failed(sandbox.check_design(design_json(source)))
  assert check["name"] == "sandbox" and check["message"] == "sandbox: host callback jax.debug.callback refused"


def test_printing_a_gigabyte_and_allocating_50_gb_are_stopped(forget):
  loud = HEADER + 'NOISE = print("x" * (1 << 30))\n' + IDENTITY
  check = failed(sandbox.check_design(design_json(loud)))
  assert check["message"] == "sandbox: output too large"
  greedy = HEADER + "HOG = np.ones(50 * 2**30 // 8)\n" + IDENTITY
  check = failed(sandbox.check_design(design_json(greedy)))
  assert check["name"] == "sandbox" and check["message"] == "sandbox: memory", check


@pytest.mark.slow
def test_a_sleep_is_killed_at_the_timeout(forget):
  sleepy = HEADER + 'NAP = IMPORT("time").sleep(3600)\n' + IDENTITY
  check = failed(sandbox.check_design(design_json(sleepy), timeout_s=12))
  assert check["message"] == "sandbox: timeout"


@pytest.mark.parametrize("line, reason", [
    ("X = getattr(__builtins__, '__import__')('os')", "forbidden name getattr at line 12"),
    ("import os", "forbidden import os at line 12"),
    ("import time", "forbidden import time at line 12"),
])
def test_lint_failures_are_reported_without_a_process(forget, line, reason):
  source = HEADER.split("\n\ndef _imp")[0] + "\n" + line + IDENTITY
  check = failed(sandbox.check_design(design_json(source)))
  assert check["name"] == "format" and check["message"].startswith(f"sandbox: {reason} of code unit Hostile@")


def _sandbox_processes():
  """Processes of this checkout's sandbox children (other checkouts may run sandboxes too)."""
  out = []
  for pid in os.listdir("/proc"):
    try:
      if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid >= sandbox.SANDBOX_UID:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
          if sandbox.CHILD.encode() in f.read():
            out.append(pid)
    except OSError:
      pass
  return out


def _none_left(seconds=20):
  """The kernel kills a PID namespace's processes when its PID 1 ends; reaping takes a moment."""
  deadline = time.time() + seconds
  while _sandbox_processes() and time.time() < deadline:
    time.sleep(0.5)
  return not _sandbox_processes()


@pytest.mark.slow
def test_an_endless_loop_and_a_fork_bomb_are_killed_with_everything_they_started(forget):
  loop = HEADER + IDENTITY.replace("return x, z", "while True:\n      pass")
  check = failed(sandbox.check_design(design_json(loop), timeout_s=30))
  assert check["message"] in ("sandbox: timeout", "sandbox: cpu time limit")
  bomb = HEADER + '''
def _bomb():
  o = IMPORT("os")
  while True:
    try:
      o.fork()
    except Exception:
      pass


BOOM = _bomb()
''' + IDENTITY
  check = failed(sandbox.check_design(design_json(bomb), timeout_s=20))
  assert check["message"] == "sandbox: timeout"
  assert _none_left()


def _cli(path, *flags):
  return subprocess.run([sys.executable, "-m", "genesys_jax.cli.check", f"--design={path}", *flags], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=900)


def _coded_file(tmp_path):
  source = open(os.path.join(HERE, "code_units", "token_shift.py")).read()
  path = tmp_path / "coded.json"
  path.write_text(design_json(source))
  return path


@pytest.mark.slow
def test_the_checker_cli_checks_a_v2_file_in_the_sandbox(forget, tmp_path):
  path = _coded_file(tmp_path)
  for kind in list(codeunits.known()):
    codeunits.forget(kind)
  proc = _cli(path, "--config=configs/ladder.py:smoke", "--rung=tiny")
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(proc.stdout)
  assert report["passed"] and report["sizing"]["fits"]


@pytest.mark.slow
def test_the_checker_cli_refuses_an_edited_file_in_one_line(forget, tmp_path):
  doc = json.loads(_coded_file(tmp_path).read_text())
  kind = next(iter(doc["units"]))
  doc["units"][kind] = doc["units"][kind].replace("prev_BxLxD - x", "prev_BxLxD + x")
  (tmp_path / "edited.json").write_text(json.dumps(doc))
  proc = _cli(tmp_path / "edited.json")
  assert proc.returncode == 2 and proc.stdout == ""
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "edited after hashing" in errors[0], proc.stderr
