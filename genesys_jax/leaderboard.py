"""The leaderboards: every verified design with its result at each rung, against the GPT seed.

`overview` is the table a run leads with (printed at its end, first on the report's overview page):
each design at every rung it reached, its delta against the GPT seed trained there, and whether it
beat it; `best_lines` name the best discovered design per rung. `by_rung` is one rung's board.
"""

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
  results = store.metrics_by_design()
  out = []
  llm = designer_info(store)
  for d in store.designs():
    if d["id"] not in results or d["status"] == "leaking":  # its metrics are voided (gab.audit)
      continue
    low = results[d["id"]].get(rungs[0], {})
    out.append({"id": d["id"], "parent": ",".join(d["parents"]) or "-", "operator": d["operator"],
                "change": _change(d, llm.get(d["id"])),
                "designer": llm.get(d["id"], {}).get("designer", "gp" if d["operator"] != "seed" else "seed"),
                **{k: llm.get(d["id"], {}).get(k) for k in ("title", "rating", "attempts", "tokens_total", "usd")},
                "params": low.get("params"), "val_bpb": low.get("val_bpb"),
                "rungs": {r: results[d["id"]][r]["val_bpb"] for r in rungs if r in results[d["id"]]}})
  return sorted(out, key=lambda r: (r["val_bpb"] is None, r["val_bpb"] or 0.0))


SIZE_FLAG = 0.05  # a design more than 5% larger or smaller than the GPT seed at a rung is flagged


def by_rung(store: Store, rungs: list[str], size_flag: float = SIZE_FLAG) -> dict[str, list[dict[str, Any]]]:
  """Per rung, every design verified there, best first, against the baselines at the same rung.

  A row: id, operator, description, is_seed, val_bpb (None if training failed), params, error,
  delta_gpt / delta_best_seed (val_bpb minus the GPT seed's / the best seed's at this rung; < 0 is
  better), param_ratio (params / the GPT seed's) and size_mismatch (|param_ratio - 1| > size_flag).
  """
  designs = {d["id"]: d for d in store.designs()}
  out: dict[str, list[dict[str, Any]]] = {r: [] for r in rungs}
  for v in store.verifications():
    if v["rung"] in out:
      d, m = designs[v["design_id"]], v["metrics"]
      out[v["rung"]].append({"id": d["id"], "operator": d["operator"], "description": d["description"],
                             "is_seed": d["operator"] == "seed", "val_bpb": m.get("val_bpb"),
                             "params": m.get("params"), "error": m.get("error"), "seq": d["seq"]})
  for rows_ in out.values():
    seeds_ = [r for r in rows_ if r["is_seed"] and r["val_bpb"] is not None]
    gpt = next((r for r in seeds_ if r["description"] == "gpt"), None)
    best_seed = min((r["val_bpb"] for r in seeds_), default=None)
    for r in rows_:
      ok = r["val_bpb"] is not None
      r["delta_gpt"] = r["val_bpb"] - gpt["val_bpb"] if ok and gpt else None
      r["delta_best_seed"] = r["val_bpb"] - best_seed if ok and best_seed is not None else None
      r["param_ratio"] = (r["params"] / gpt["params"]) if ok and gpt and gpt["params"] else None
      r["size_mismatch"] = r["param_ratio"] is not None and abs(r["param_ratio"] - 1) > size_flag
    rows_.sort(key=lambda r: (r["val_bpb"] is None, r["val_bpb"] or 0.0, r["seq"]))
  return out


def format_rungs(boards: dict[str, list[dict[str, Any]]], rungs: list[str]) -> str:
  """One block per rung: bpb, delta vs the GPT seed and the best seed, parameter ratio (! > 5% off)."""
  lines = []
  for rung in rungs:
    lines += [f"rung {rung}: validation bpb, delta vs the GPT seed / best seed, parameters vs GPT",
              f"{'rank':>4}  {'design':16}  {'val_bpb':>8}  {'d_gpt':>8}  {'d_seed':>8}  {'params':>6}  change"]
    for i, r in enumerate(boards[rung], 1):
      f = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
      flag = "!" if r["size_mismatch"] else " "
      what = f"[{r['operator']}] {r['description']}"
      if r["error"]:  # the kind of failure only (the message is in the store and the report)
        what = f"failed ({r['error'].split(':')[0]}) {what}"
      lines.append(f"{i:>4}  {r['id']:16}  {f(r['val_bpb'], '8.4f'):>8}  {f(r['delta_gpt'], '+8.4f'):>8}  "
                   f"{f(r['delta_best_seed'], '+8.4f'):>8}  {f(r['param_ratio'], '5.2f'):>5}{flag}  {what}")
  return "\n".join(lines)


def overview(store: Store, rungs: list[str]) -> list[dict[str, Any]]:
  """Each design with a result at some rung: {"id", "operator", "is_seed", "is_gpt", "change",
  "rungs": {rung: {"val_bpb", "delta_gpt", "beat_gpt", "error"}}, "reached"}, where beat_gpt is
  delta_gpt < 0 (both
  None for the GPT seed itself, a failed run or a rung without a GPT result) and reached the highest
  rung with a val_bpb. Ordered by the highest rung reached, then val_bpb there: the first row is
  the best design at the top of the ladder."""
  boards = by_rung(store, rungs)
  changes = {r["id"]: r["change"] for r in rows(store, rungs)}
  out: dict[str, dict[str, Any]] = {}
  for rung in rungs:
    for r in boards[rung]:
      gpt = r["is_seed"] and r["description"] == "gpt"
      row = out.setdefault(r["id"], {"id": r["id"], "operator": r["operator"], "is_seed": r["is_seed"],
                                     "is_gpt": gpt, "seq": r["seq"], "rungs": {}, "reached": None,
                                     "change": changes.get(r["id"], f"[{r['operator']}] {r['description']}")})
      row["rungs"][rung] = {"val_bpb": r["val_bpb"], "delta_gpt": None if gpt else r["delta_gpt"],
                            "error": r["error"],
                            "beat_gpt": None if gpt or r["delta_gpt"] is None else r["delta_gpt"] < 0}
      if r["val_bpb"] is not None:
        row["reached"] = rung
  level = {r: i for i, r in enumerate(rungs)}

  def order(row):
    top = row["reached"]
    return (-level[top] if top else 1, row["rungs"][top]["val_bpb"] if top else 0.0, row["seq"])
  return sorted(out.values(), key=order)


def _cell(result: dict[str, Any] | None) -> str:
  if result is None:
    return "-"
  if result["val_bpb"] is None:
    return f"failed ({(result['error'] or '?').split(':')[0]})"
  beat = {True: " beat", False: "", None: ""}[result["beat_gpt"]]
  delta = "" if result["delta_gpt"] is None else f" {result['delta_gpt']:+.4f}"
  return f"{result['val_bpb']:.4f}{delta}{beat}"


def format_overview(table: list[dict[str, Any]], rungs: list[str]) -> str:
  """The overview as text: per rung val_bpb, delta vs the GPT seed there, and 'beat' if below it."""
  width = max([len(_cell(x)) for row in table for x in row["rungs"].values()] + [len(r) for r in rungs])
  head = f"{'design':16}  " + "  ".join(f"{r:{width}}" for r in rungs) + "  change"
  lines = ["designs at every rung they reached: val_bpb, its delta vs the GPT seed there, 'beat' when "
           "lower", head, "-" * len(head)]
  for row in table:
    cells = "  ".join(f"{_cell(row['rungs'].get(r)):{width}}" for r in rungs)
    lines.append(f"{row['id']:16}  {cells}  {row['change']}")
  return "\n".join(lines)


def best_lines(table: list[dict[str, Any]], rungs: list[str]) -> list[str]:
  """Per rung, the discovered design with the lowest val_bpb there and how it did against GPT."""
  out = []
  for rung in rungs:
    here = [(row["rungs"][rung]["val_bpb"], row["seq"], row) for row in table
            if not row["is_seed"] and row["rungs"].get(rung, {}).get("val_bpb") is not None]
    if not here:
      out.append(f"best at {rung}: no discovered design has a result there")
      continue
    bpb, _, row = min(here, key=lambda x: x[:2])
    result = row["rungs"][rung]
    verdict = ("no GPT result to compare" if result["beat_gpt"] is None else
               f"{result['delta_gpt']:+.4f} vs GPT: {'beat it' if result['beat_gpt'] else 'did not beat it'}")
    out.append(f"best at {rung}: {row['id']} val_bpb {bpb:.4f} ({verdict})")
  return out
