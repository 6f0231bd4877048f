"""The sandbox's child: `python -I gab/sandbox_child.py` (run by `gab.sandbox`, never by hand).

It reads one job (JSON) from stdin, then, before importing anything but the standard library,
seals itself (`isolate`, gab/sandbox_seal.py):
  1-4. new network, mount and PID namespaces (it is PID 1 of its own: everything it starts dies
     with it, and each process dies with its parent); a minimal read-only root holding only what
     Python and the job need, /tmp the only writable place; rlimits; an unprivileged uid;
  5. replaces JAX's host-callback entry points by ones that refuse (and record the attempt).
Then it runs the function the job names in "call" (`gab.checker.trace_in_child`: register the
code units and trace; `gab.checker.verify_in_child`: judge the traced programs, no unit code; the
training jobs of `train.sandboxed`) and writes one JSON result to the original stdout; everything
else the job prints goes to stderr.
"""

import json
import os
import sys

# Not `gab.sandbox_seal`: gab/__init__ imports JAX, whose threads would make unshare() fail.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_seal import die_with_parent, isolate  # noqa: E402 (the standard library only)
del sys.path[0]

VIOLATIONS = []


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
