"""The leaderboard: every verified design with its result at each rung."""

from __future__ import annotations

from typing import Any
import json

from evolution.store import Store


def designer_info(store: Store) -> dict[str, dict[str, Any]]:
  """design id -> the LLM designer's summary (designer, title, rating, attempts, tokens, dollars)."""
  return {a["design_id"]: json.loads(a["content"]) for a in store.artifacts(kind="designer")
          if a["design_id"] is not None}


def _change(d: dict[str, Any], info: dict[str, Any] | None) -> str:
  if info is None:
    return f"[{d['operator']}] {d['description']}"
  rating = "-" if info.get("rating") is None else f"{info['rating']}/5"
  return (f"[{info['designer']} {d['operator']}] {info.get('title') or '-'} (review {rating}, "
          f"{info.get('attempts', 0)} tries, {info.get('tokens_total', 0):,} tokens, "
          f"${info.get('usd', 0.0):.4f})")


def rows(store: Store, rungs: list[str]) -> list[dict[str, Any]]:
  """Verified designs, best validation bpb at the lowest rung first, with every rung's result."""
  results: dict[str, dict[str, Any]] = {}
  for v in store.verifications():
    results.setdefault(v["design_id"], {})[v["rung"]] = v["metrics"]
  out = []
  llm = designer_info(store)
  for d in store.designs():
    if d["id"] not in results:
      continue
    low = results[d["id"]].get(rungs[0], {})
    out.append({"id": d["id"], "parent": ",".join(d["parents"]) or "-", "operator": d["operator"],
                "change": _change(d, llm.get(d["id"])),
                "designer": llm.get(d["id"], {}).get("designer", "gp" if d["operator"] != "seed" else "seed"),
                **{k: llm.get(d["id"], {}).get(k) for k in ("title", "rating", "attempts", "tokens_total", "usd")},
                "params": low.get("params"), "val_bpb": low.get("val_bpb"),
                "rungs": {r: results[d["id"]][r]["val_bpb"] for r in rungs if r in results[d["id"]]}})
  return sorted(out, key=lambda r: (r["val_bpb"] is None, r["val_bpb"] or 0.0))


def format_table(board: list[dict[str, Any]], rungs: list[str]) -> str:
  """Design, parent, params and bpb at the lowest rung, bpb at each higher rung, the change."""
  head = (f"{'rank':>4}  {'design':16}  {'parent':16}  {'params':>10}  "
          + "  ".join(f"{r:>8}" for r in rungs) + "  change")
  lines = ["leaderboard (validation bits per byte per rung)", head, "-" * len(head)]
  for i, r in enumerate(board, 1):
    params = "-" if r["params"] is None else f"{r['params']:,}"
    bpbs = "  ".join(f"{r['rungs'][g]:>8.4f}" if r["rungs"].get(g) is not None else f"{'-':>8}"
                     for g in rungs)
    parent = r["parent"] if len(r["parent"]) <= 16 else r["parent"][:15] + "+"
    lines.append(f"{i:>4}  {r['id']:16}  {parent:16}  {params:>10}  {bpbs}  {r['change']}")
  return "\n".join(lines)
