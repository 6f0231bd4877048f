"""Checks that kill the process: a design whose check crashes the loop is retried once, then failed.

Built-in units are checked in the loop's own process (only code units go to the sandbox). A few
designs make XLA itself crash while a check runs (seen: a segfault in XLA:CPU's runtime on a large
random scratch design), or get the process killed for memory; no Python handler sees that. So the
loop notes in `WORKDIR/checking.json` which design and check it is in before each check, and clears
the note when the check returns. After a restart, a note naming the design about to be checked means
the last attempt died: the check is tried once more (the first death may have been a kill of the run
itself), and after a second death the design is recorded as failing that check, so the run goes on
and a replay makes the same decision. An interrupt (Ctrl-C, SIGTERM: genesys_jax/interrupt.py) is
no death: the note goes as the check is abandoned, and the check's thread, which runs on until the
process exits, writes no new one.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Callable

from gab import atomic, checker
from gab.tree import Unit

NOTE = "checking.json"
RETRIES = 1  # restarts that may re-run a check that killed the process


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      note = json.load(f)
    return note if isinstance(note, dict) else {}
  except (OSError, ValueError):
    return {}


def guarded(workdir: str, tree: Unit, run: Callable[[Callable[[str], None]], checker.Report],
            log: Callable[[str], None]) -> checker.Report:
  """`run(progress)` checks `tree` (calling `progress(check_name)` before each check), unless the
  note says its check already killed this workdir's process more than RETRIES times."""
  path = os.path.join(workdir, NOTE)
  design = tree.content_hash()
  note = _read(path)
  deaths = int(note.get("deaths", 0)) + 1 if note.get("design") == design else 0
  if deaths:
    log(f"  the check of {design} ({note.get('check') or 'starting'}) killed the last run")
  if deaths > RETRIES:
    name = note.get("check") or checker.NAMES[0]
    os.remove(path)
    return checker.Report([checker.Check(
        name, checker.FAIL, f"the {name} check killed the process that ran it {deaths} times (a crash "
        f"inside XLA or the runtime, or out of memory); not tried again",
        "make the design smaller or simpler (fewer units, shorter chunks); if it looks right, "
        "this is an XLA bug worth reporting with the design file")], {})

  lock, left = threading.Lock(), [False]

  def progress(name: str) -> None:
    with lock:  # a check abandoned by an interrupt runs on (its timeout thread): it writes no note
      if not left[0]:
        atomic.write(path, json.dumps({"design": design, "check": name, "deaths": deaths}, sort_keys=True))

  progress("")
  try:
    return run(progress)
  finally:
    with lock:
      left[0] = True
      if os.path.exists(path):
        os.remove(path)
