"""Bad input to a command-line tool ends in one line on stderr and exit code 2, never a traceback.

Exit 2 is the tools' "unusable input" code (the checker uses 1 for "the design failed"). Each
helper here turns one kind of bad input into `error: <what is wrong and what is expected>`:
a config file that does not load, an override naming no field, an invalid config value, and,
around a run, the errors a run raises for bad input or a bad environment (a full or unwritable
disk, a damaged store, a workdir locked by another run).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import sys
from typing import Iterable, NoReturn

USAGE = 2


def fail(*lines: str) -> NoReturn:
  for line in lines:
    print(f"error: {line}", file=sys.stderr, flush=True)
  sys.exit(USAGE)


def _innermost(e: BaseException) -> BaseException:
  while e.__cause__ is not None:
    e = e.__cause__
  return e


def _first_line(text: str) -> str:
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[0] if lines else ""


def config_or_exit(holder, flag: str = "config"):
  """The value of a `config_flags.DEFINE_config_file` flag, or exit naming why it did not load."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  raw = flags.FLAGS[flag].value
  error = getattr(raw, "__dict__", {}).get("_error")  # ml_collections' _ErrorConfig placeholder
  if error is None:
    return holder.value
  try:
    name = config_flags.get_config_filename(flags.FLAGS[flag])
  except Exception:  # noqa: BLE001 - only used to word the message
    name = ""
  path = name.split(":", 1)[0]
  if path and not os.path.isfile(path):
    fail(f"--{flag}={name}: no such config file (expected a Python file with get_config(), e.g. "
         f"configs/ladder.py or configs/ladder.py:smoke)")
  cause = _innermost(error)
  detail = [line.strip() for line in str(cause).splitlines() if line.strip()]
  fail(f"--{flag}={name}: the config file does not load: {type(cause).__name__}: "
       f"{detail[-1] if detail else ''}")


def unknown_field(e: AttributeError, argv: Iterable[str]) -> str:
  """`config_flags`' error for an override naming no field, as one readable line."""
  inner: object = e
  while isinstance(inner, BaseException) and inner.args:
    inner = inner.args[0]
  lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
  field = lines[0].strip("\"'\\") if lines else "?"
  hint = ""
  if len(lines) > 1 and lines[1].startswith("Did you mean"):
    hint = f" ({lines[1][0].lower()}{lines[1][1:]})"
  full = next((a.split("=", 1)[0].lstrip("-") for a in argv
               if a.split("=", 1)[0].rsplit(".", 1)[-1] == field), field)
  return (f"unknown config field {full!r}{hint}: overrides must name existing fields of the "
          f"config file, e.g. --config.evolution.n_proposals=4")


def flag_error(e: Exception) -> str:
  """absl's flag parsing error as one line: the missing required flags named together."""
  missing = re.findall(r"Flag --(\w+) must have a value other than None", str(e))
  if missing:
    return f"missing required flag{'s' if len(missing) > 1 else ''} " + ", ".join(
        f"--{m}" for m in missing)
  return _first_line(e)


def _field_paths(config, prefix: str = "") -> list[str]:
  out = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    out += _field_paths(value, path + ".") if hasattr(value, "items") else [path]
  return out


def unknown_flag(name: str, config) -> str:
  """absl's unknown flag as one line, naming the config fields it may have meant
  (`--n_proposals` -> `--config.evolution.n_proposals`); `config` may be None (not loaded)."""
  line = f"unknown flag --{name}"
  leaf = name.removeprefix("config.")
  try:
    fields = _field_paths(config) if config is not None else []
  except Exception:  # noqa: BLE001 - a config that did not load: no hint
    fields = []
  matches = [f for f in fields if f == leaf or f.endswith("." + leaf)]
  if not matches:
    return line
  more = f" (or {len(matches) - 1} more like it)" if len(matches) > 1 else ""
  return f"{line}: config fields are set as --config.{matches[0]}=VALUE{more}"


def validate_or_exit(config, rungs: Iterable[str] | None = None) -> None:
  """Exit with one line per invalid field unless `config` passes `genesys_jax.validate`."""
  from genesys_jax import validate  # pylint: disable=g-import-not-at-top
  errors = validate.config_errors(config, rungs=rungs)
  if errors:
    fail(*errors)


def lock_free_or_exit(workdir: str) -> None:
  """Exit naming the holder if another live run holds the workdir (before any heavy import)."""
  from genesys_jax import runlock  # pylint: disable=g-import-not-at-top
  try:
    runlock.check_free(workdir)
  except runlock.LockedError as e:
    fail(describe(e))


def describe(e: BaseException) -> str:
  """One line for an error a run raised for bad input or a bad environment."""
  if isinstance(e, OSError) and e.strerror:
    where = f" {e.filename}" if e.filename else ""
    return f"cannot use{where}: {e.strerror}"
  if isinstance(e, sqlite3.Error):
    return f"the store failed: {type(e).__name__}: {_first_line(e)} (disk full or file damaged?)"
  if isinstance(e, KeyError) and e.args:
    return _first_line(e.args[0])
  return " ".join(line.strip() for line in str(e).splitlines() if line.strip())


@contextlib.contextmanager
def one_line_errors():
  """Around a run: bad input, a full or unwritable disk, a damaged or locked store -> exit 2."""
  from evolution.store import StoreError  # pylint: disable=g-import-not-at-top
  from gab.tree import DesignError  # pylint: disable=g-import-not-at-top
  from genesys_jax.runlock import LockedError  # pylint: disable=g-import-not-at-top
  try:
    yield
  except (DesignError, ValueError, KeyError, OSError, sqlite3.Error, StoreError, LockedError) as e:
    fail(*(getattr(e, "lines", None) or [describe(e)]))
