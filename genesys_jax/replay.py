"""Seeded replay: compare a run with a recorded one, design by design, and report divergence.

A run is a pure function of its resolved config (seed included) on CPU, so re-running a recorded
run with the same config must give the same design ids in the same order and the same metrics
(timing fields aside). `compare` names the first design or verification where two runs part ways,
and the config fields in which they differ.
"""

from __future__ import annotations

import json
import os
from typing import Any

from evolution.store import Store

TIMING_FIELDS = ("tokens_per_s", "train_wall_s", "mfu",  # measured, not computed: never compared
                 "resumed_from_step")  # (nor where an attempt resumed)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix: d}
  out: dict[str, Any] = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
  return out


def config_differences(old_workdir: str, config_json: str) -> list[str]:
  with open(os.path.join(old_workdir, "config.json")) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config_json))
  keys = sorted((set(old) | set(new)) - {"replay_from"})
  return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys
          if old.get(k) != new.get(k)]


def _designs(store: Store) -> list[tuple]:
  return [(d["id"], tuple(d["parents"]), d["operator"], d["description"], d["status"])
          for d in store.designs()]


def _verifications(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
  return {(v["design_id"], v["rung"]): {k: x for k, x in v["metrics"].items() if k not in TIMING_FIELDS}
          for v in store.verifications()}


def compare(old_workdir: str, new_store: Store) -> dict[str, Any]:
  """{"diverged": bool, "designs": n compared, "first_divergence": str | None}."""
  path = os.path.join(old_workdir, "evolution.db")
  if not os.path.exists(path):
    raise FileNotFoundError(f"replay_from: no evolution.db in {old_workdir}")
  with Store(path) as old_store:
    old, old_v = _designs(old_store), _verifications(old_store)
  new, new_v = _designs(new_store), _verifications(new_store)
  first = None
  for seq, (a, b) in enumerate(zip(old, new)):
    if a != b:
      first = f"design #{seq}: recorded {a[0]} ({a[2]}: {a[3]}; {a[4]}), replay made {b[0]} ({b[2]}: {b[3]}; {b[4]})"
      break
    for key in sorted(k for k in old_v if k[0] == a[0]):
      if old_v[key] != new_v.get(key):
        diff = sorted(f for f in set(old_v[key]) | set(new_v.get(key, {}))
                      if old_v[key].get(f) != new_v.get(key, {}).get(f))
        first = f"design #{seq} {a[0]} at rung {key[1]}: metrics differ in {diff}"
        break
    if first:
      break
  if first is None and len(old) != len(new):
    first = f"design #{min(len(old), len(new))}: recorded run has {len(old)} designs, replay {len(new)}"
  return {"diverged": first is not None, "designs": min(len(old), len(new)), "first_divergence": first}
