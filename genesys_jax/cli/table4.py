"""Valid-implementation rate and cost per design, `llm` vs `direct` (the original's Table 4).

  GEMINI_API_KEY=... python -m genesys_jax.cli.table4 --workdir=DIR --n=10 \
      [--config=configs/ladder.py[:VARIANT]] [--base_url=URL] [--designers=llm,direct]

For each designer, a run in DIR/<designer> starts from the config's seeds (checked and trained at
the lowest rung), then makes `n` proposals with that designer, GP choosing modes and parents, and
checks every implementation in the sandbox; nothing else is trained. A proposal counts as valid when
its design passed the checker. Prints one JSON object: per designer the number of proposals, valid
ones, the rate, mean dollars per design (proposal / implementation), mean tokens and tries, tries
and wall time per valid design, how each proposal ended (`final`: its design's first failed check)
and every coder try by verdict (`tries_by_verdict`). Each run is resumable (same workdir) and
recorded: `--replay_from=OLD_DIR` replays it with no model and adds `replay` (identical or where
it diverged) per designer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def load_config(spec: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("table4_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def summarise(store: Any, designer: str) -> dict[str, Any]:
  rows = [json.loads(a["content"]) for a in store.artifacts(kind="designer")]
  rows = [r for r in rows if r["designer"] == designer]
  status = {d["id"]: d["status"] for d in store.designs()}
  valid = [r for r in rows if r.get("design_id") and status.get(r["design_id"]) in ("valid", "verified")]
  n = len(rows)
  mean = lambda key: round(sum(r.get(key) or 0 for r in rows) / n, 6) if n else None  # noqa: E731
  final: dict[str, int] = {}     # how each proposal ended: its design's first failed check, or why none
  for r in rows:
    report = (store.design(r["design_id"])["report"] or {}) if r.get("design_id") else {}
    failed = [c["name"] for c in report.get("checks", []) if c.get("status") == "fail"]
    if not r.get("design_id"):
      key = f"no design ({r['status']})"
    elif failed:
      key = f"check:{failed[0]}"
    elif report.get("passed"):
      key = "passed"
    else:  # refused before the checker ran: the last try's verdict (lint, read, typing, ...)
      key = f"before the checker: {(r.get('verdicts') or ['unknown'])[-1]}"
    final[key] = final.get(key, 0) + 1
  tries: dict[str, int] = {}     # every coder try by verdict (pipeline.verdict)
  for r in rows:
    for v in r.get("verdicts", []):
      tries[v] = tries.get(v, 0) + 1
  wall = sum(r.get("wall_s") or 0 for r in rows)
  return {"proposals": n, "valid": len(valid), "valid_rate": round(len(valid) / n, 4) if n else None,
          "usd_per_design": mean("usd"), "usd_proposal": mean("usd_proposal"),
          "usd_implementation": mean("usd_implementation"), "tokens_per_design": mean("tokens_total"),
          "tries_per_design": mean("attempts"),
          "tries_per_valid_design": round(sum(r.get("attempts") or 0 for r in rows) / len(valid), 2) if valid else None,
          "wall_s": round(wall, 1), "wall_s_per_valid_design": round(wall / len(valid), 1) if valid else None,
          "status": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
          "final": dict(sorted(final.items())), "tries_by_verdict": dict(sorted(tries.items()))}


def run(config: Any, workdir: str, n: int, designers: list[str], log=print) -> dict[str, Any]:
  from evolution.designers.config import BudgetStop  # pylint: disable=g-import-not-at-top
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  out: dict[str, Any] = {"n": n}
  for name in designers:
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.designer.kind = name
      cfg.evolution.n_proposals = n
      if cfg.replay_from:
        cfg.replay_from = os.path.join(cfg.replay_from, name)
    controller = loop.Controller(cfg, os.path.join(workdir, name), log)
    try:
      controller.add_seeds()
      controller.verify_pending()
      for index in range(controller.state.proposals_done, n):
        try:
          controller.step(index, n)
        except BudgetStop as e:
          log(f"{name}: {e}; stopped")
          break
      out[name] = summarise(controller.store, name)
      if cfg.replay_from:
        from genesys_jax import replay  # pylint: disable=g-import-not-at-top
        out[name]["replay"] = replay.compare(cfg.replay_from, controller.store)
    finally:
      if controller.designers is not None:
        controller.designers.close()
      controller.store.close()
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--n", type=int, default=10)
  parser.add_argument("--config", default="configs/ladder.py:smoke")
  parser.add_argument("--base_url", default=None)
  parser.add_argument("--designers", default="llm,direct")
  parser.add_argument("--replay_from", default="")
  args = parser.parse_args(argv)
  designers = [d for d in args.designers.split(",") if d]
  bad = [d for d in designers if d not in ("llm", "direct")]
  if bad or args.n < 1:
    print(f"error: --designers takes llm and/or direct (got {bad}), --n at least 1", file=sys.stderr)
    return 2
  config = load_config(args.config)
  with config.unlocked():
    if args.base_url is not None:
      config.designer.base_url = args.base_url
    config.replay_from = args.replay_from
  try:
    result = run(config, args.workdir, args.n, designers, log=lambda line: print(line, file=sys.stderr))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
