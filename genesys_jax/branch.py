"""A branch: a new run, on a new workdir, that starts from a recorded run and keeps what stays valid.

`--config.branch_from=OLD --workdir=NEW` takes OLD's history into NEW (its designs with their checks,
the proposals made, the islands) and keeps each result whose rung trains as before under NEW's
config. What a change to a result-affecting field (genesys_jax/resume.py) drops:
- `rungs.R.*`: the results at rung R, and OLD's jobs queued there (its designs and baselines
  train there again, as NEW's ladder chooses);
- `evolution.*`, `designer.*`, `ladder.*`, `seeds`, `units.files` (what is proposed and promoted
  next): nothing;
- anything else (the run's seed, the data, the training, zero-shot): every result.
A change the checker's verdicts depend on (`checker.*`, `data.seq_len`, `data.vocab`,
`data.spm_model`, the lowest rung's fields other than `Rung.TRAINING_ONLY`, which rung is lowest) is
refused: a branch keeps the verdicts. Such a change is a new run.

NEW then runs as a resumed run does: each valid design without a result at the lowest rung trains
there, the seeds train as baselines wherever they lack one, promotions fill the ladder's slots under
NEW's config (`ladder.*`), and proposals go on from OLD's count. The checkpoints and TensorBoard
events of the results kept are copied (copies, not links: a training NEW resumes writes beside
them), a dropped rung's are not (a checkpoint of the old budget must not be resumed). NEW's store is the last file written,
renamed into place: a branch stopped midway leaves no store and starts over on the next run. Only the
SQLite store can be branched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from typing import Callable

from evolution.store import Store
from genesys_jax import resume
from train.rung import Rung

STORE = "evolution.db"
_STEERING = ("evolution.", "designer.", "ladder.", "seeds", "units.")
_CHECKED_DATA = ("data.seq_len", "data.vocab", "data.spm_model")
_OUTPUTS = ("checkpoints", "tensorboard")


class BranchError(ValueError):
  """A branch that cannot be made (bad source, or a change to what the checker judged)."""


@dataclasses.dataclass(frozen=True)
class Plan:
  changes: list[resume.Change]   # the result-affecting ones
  dropped: tuple[str, ...]       # rungs whose results go

  def line(self, old: str) -> str:
    kept = "every result kept" if not self.dropped else f"results at {', '.join(self.dropped)} dropped"
    what = ", ".join(map(str, self.changes)) or "no change to what results mean"
    return f"branching from {old}: {what}; {kept}"


def _rung_field(path: str) -> tuple[str, str] | None:
  parts = path.split(".")
  return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "rungs" else None


def _judged(path: str, lowest: str) -> bool:
  """Whether the checker's verdicts depend on the field at `path`."""
  where = _rung_field(path)
  if where is not None:
    return where[0] == lowest and where[1] not in Rung.TRAINING_ONLY
  return path.startswith("checker.") or path in _CHECKED_DATA


def plan(old: dict, new: dict) -> Plan:
  """What a branch from a run recorded with config `old` to config `new` (JSON forms) drops; raises
  BranchError for a change to what the checker judged."""
  rungs = list(new["ladder"]["rungs"])
  found = [c for c in resume.changes(old, new) if c.results]
  checked = [c for c in found if _judged(c.path, rungs[0])]
  if list(old["ladder"]["rungs"])[:1] != rungs[:1]:
    checked.append(resume.Change("ladder.rungs[0]", old["ladder"]["rungs"][0], rungs[0], True))
  if checked:
    raise BranchError(f"a branch keeps the checker's verdicts, and these fields change them: "
                      f"{', '.join(map(str, checked))}; start a new run (a new --workdir without "
                      f"branch_from) instead")
  dropped: set[str] = set()
  for c in found:
    where = _rung_field(c.path)
    if where is not None:
      dropped.add(where[0])
    elif not c.path.startswith(_STEERING):
      dropped.update(rungs)
  return Plan(found, tuple(r for r in rungs if r in dropped))


def check_source(old: str, new: str, store_url: str) -> None:
  """Raise BranchError unless `old` is a recorded run that `new` (no store yet) can branch from."""
  if store_url:
    raise BranchError("config.branch_from: only a run on the SQLite store (store.url '') can be branched")
  for name in (STORE, resume.CONFIG_FILE):
    if not os.path.isfile(os.path.join(old, name)):
      raise BranchError(f"config.branch_from = {old!r}: no {name} there (expected the workdir of a "
                        f"recorded run)")
  if os.path.realpath(old) == os.path.realpath(new):
    raise BranchError(f"config.branch_from = {old!r} is the workdir itself; a branch needs a new --workdir")
  leftovers = set(os.listdir(new)) - {"run.lock", *_OUTPUTS} if os.path.isdir(new) else set()
  if leftovers:
    raise BranchError(f"--workdir {new} is not empty ({', '.join(sorted(leftovers)[:3])}); a branch "
                      f"starts in a new workdir")


def make(old: str, new: str, config_json: str, log: Callable[[str], None]) -> Plan:
  """Make NEW's store and training outputs from OLD's (NEW: the locked workdir, without a store)."""
  with open(os.path.join(old, resume.CONFIG_FILE)) as f:
    p = plan(json.load(f), json.loads(config_json))
  rungs = json.loads(config_json)["ladder"]["rungs"]
  for sub in _OUTPUTS:  # what a branch stopped midway copied
    shutil.rmtree(os.path.join(new, sub), ignore_errors=True)
  partial = os.path.join(new, STORE + ".branching")
  for suffix in ("", "-wal", "-shm"):
    if os.path.exists(partial + suffix):
      os.remove(partial + suffix)
  source = sqlite3.connect(f"file:{os.path.join(old, STORE)}?mode=ro", uri=True)
  target = sqlite3.connect(partial)
  try:
    source.backup(target)  # a consistent snapshot, even of a run still going
  finally:
    source.close()
    target.close()
  with Store(partial) as store:
    with store.transaction():
      for job in store.jobs("claimed"):  # OLD's workers do not work for NEW
        store.release(job["worker_id"], job["design_id"], job["rung"])
      done = {(v["design_id"], v["rung"]) for v in store.verifications()}
      queued = {(j["design_id"], j["rung"]) for j in store.jobs()}  # (OLD's choices to train next)
      for design, rung in sorted(done | queued):
        if rung in p.dropped:
          store.drop_verification(design, rung)
      if rungs[0] in p.dropped:  # no result left at the lowest rung: valid, to be trained there
        for d in store.designs():
          if d["status"] in ("verified", "failed"):
            store.set_status(d["id"], "valid")
      store.set_meta("branched_from", os.path.abspath(old))
      store.add_artifact(None, "branch", json.dumps(
          {"from": os.path.abspath(old), "changes": [str(c) for c in p.changes], "dropped": list(p.dropped)},
          sort_keys=True))
    known = {d["id"] for d in store.designs()}
  for sub in _OUTPUTS:
    root = os.path.join(old, sub)
    for design in sorted(os.listdir(root)) if os.path.isdir(root) else ():
      for rung in sorted(os.listdir(os.path.join(root, design))) if design in known else ():
        if rung not in p.dropped:  # (a result, or a training to resume, as it was)
          shutil.copytree(os.path.join(root, design, rung), os.path.join(new, sub, design, rung))
  os.replace(partial, os.path.join(new, STORE))
  log(p.line(old))
  return p
