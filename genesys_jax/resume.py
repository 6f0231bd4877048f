"""Resuming a run: the new config against the one the run recorded, field by field.

A run keeps its resolved config in WORKDIR/config.json. Run again on that workdir, the new resolved
config is compared with it leaf by leaf, each difference classed by its field's `results` flag
(gab/fields.py, `genesys_jax.run_config.result_affecting()`):
- a change that alters what the recorded results mean (budgets, data, vocabulary, seeds, sizes,
  thresholds; a value no field declares, such as a rung's resolved `seq_len`) is refused with one
  line naming every such field, before anything is written (`ConfigChanged`): results trained under
  two budgets would otherwise share one leaderboard. Such a change is made in a branch instead
  (genesys_jax/branch.py), a new workdir that keeps what stays valid;
- any other change (reporting, workers, checkpoint cadence, how long the run goes) is applied, and
  named in one line (`applied_line`);
- a field the recorded config lacks (added to the code since the run was recorded) at its default
  is applied like a harmless change: the run already behaved as the default says.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from gab import fields
from genesys_jax.run_config import RunConfig

CONFIG_FILE = "config.json"
_ABSENT = "<absent>"


class ConfigChanged(ValueError):
  """A resumed run's config changes fields that alter what its results mean."""


@dataclasses.dataclass(frozen=True)
class Change:
  path: str        # dotted, e.g. rungs.tiny.train_tokens
  old: Any         # _ABSENT when the recorded config lacks the field
  new: Any
  results: bool    # whether it alters what the recorded results mean

  def __str__(self) -> str:
    return f"{self.path} ({_show(self.old)} -> {_show(self.new)})"


def _show(value: Any) -> str:
  return value if value == _ABSENT else json.dumps(value)


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
  """{dotted path: leaf value} of a config's JSON form (lists are leaves)."""
  if not isinstance(doc, dict):
    return {prefix: doc}
  out: dict[str, Any] = {}
  for key, value in doc.items():
    out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return out


def _results(path: str, old: Any, new: Any) -> bool:
  found = fields.lookup(RunConfig, path)
  if found is None:
    return True  # not a declared field (a resolved value): assume it matters
  spec, default = found
  if old == _ABSENT and json.loads(json.dumps(default)) == new:
    return False
  return spec.results


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
  """Every leaf that differs between two configs' JSON forms, in path order."""
  a, b = flatten(old), flatten(new)
  out = []
  for path in sorted(set(a) | set(b)):
    x, y = a.get(path, _ABSENT), b.get(path, _ABSENT)
    if x != y:
      out.append(Change(path, x, y, _results(path, x, y)))
  return out


def recorded(workdir: str) -> dict[str, Any] | None:
  """The config a workdir's run recorded, or None for a new workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check(config_json: str, workdir: str) -> list[Change]:
  """The harmless changes of resuming `workdir` with `config_json` (the resolved config); raises
  `ConfigChanged` naming the fields that alter what its results mean."""
  old = recorded(workdir)
  if old is None:
    return []
  found = changes(old, json.loads(config_json))
  refused = [c for c in found if c.results]
  if refused:
    where = os.path.join(workdir, CONFIG_FILE)
    raise ConfigChanged(
        f"{workdir} was run with another config, and these fields change what its results mean: "
        f"{', '.join(map(str, refused))}; resume it with the values recorded in {where}, or branch a "
        f"new run that keeps what stays valid: --workdir=NEW --config.branch_from={workdir}")
  return found


def applied_line(found: list[Change]) -> str | None:
  """The one line naming the harmless changes a resumed run applies (None: there are none)."""
  if not found:
    return None
  return f"resuming with changed settings that leave results as they are: {', '.join(map(str, found))}"
