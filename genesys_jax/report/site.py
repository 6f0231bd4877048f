"""The run's static site: `write(workdir, store)` renders WORKDIR/report/ from the store.

Pages: index.html (first the overview table: each design at every rung it reached against the GPT
seed there, and the best discovered design per rung; then counts by status/operator/designer, time
and cost, the leaderboards, best-so-far per rung, the ladder funnel, the config), rung-R.html (the leaderboard of rung R, every
design against the GPT seed and the best seed at that rung), tree.html (the evolution tree) and
design-ID.html (one per design, beside its design file design-ID.json, with the command that
exports it as a standalone package). Every file is written atomically (a temporary file renamed over
the old one), so a browser watching a running loop never reads half a page; plotly.js is copied
from the installed plotly package, so the site works from file:// with no network.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from evolution.store import Store
from genesys_jax import export_design, leaderboard
from genesys_jax.report import figures, gather, plots, render


def _design_page(run: gather.Run, d: dict[str, Any], nav: dict[str, Any]) -> str:
  rows = [{"rung": r, **next((x for x in run.boards[r] if x["id"] == d["id"]), {}), "metrics": m}
          for r, m in d["metrics"].items()]
  report = json.loads(d["report"]) if isinstance(d["report"], str) else (d["report"] or {})
  curves = figures.loss_curves(d)
  children = [c["child_id"] for c in run.lineage if c["parent_id"] == d["id"]]
  export = os.path.join(export_design.default_out(run.workdir, d["id"]), "model.py")
  return render.page(
      "design.html", title=f"design {d['id']}", d=d, tree=gather.tree_of(d), rows=rows,
      report=report, diff=gather.diff_from_parent(run, d), code=gather.code_units(gather.tree_of(d)),
      curves=plots.div(curves, height=340) if curves else "", artifacts=run.artifacts.get(d["id"], []),
      children=children, known=set(run.by_id), plotly=curves is not None, run=run,
      exported=os.path.relpath(export, os.path.join(run.workdir, "report")) if os.path.exists(export)
      else "", **nav)


def pages(run: gather.Run) -> dict[str, str]:
  """File name -> HTML of every page of the site."""
  nav = {"root": ".", "nav_rungs": run.rungs}
  funnel = gather.funnel(run)
  out = {
      "index.html": render.page(
          "index.html", title="overview", run=run, counts=gather.counts(run), totals=gather.totals(run),
          best_lines=leaderboard.best_lines(run.overview, run.rungs),
          funnel=funnel, config=json.dumps(run.config, indent=1, sort_keys=True),
          best=plots.div(figures.best_so_far(run)), funnel_fig=plots.div(figures.funnel(funnel), height=340),
          plotly=True, **nav),
      "tree.html": render.page("tree.html", title="evolution tree", run=run,
                               tree=plots.div(figures.evolution_tree(run), height=560), plotly=True,
                               bpb={d["id"]: gather.lowest_bpb(d, run.rungs) for d in run.designs}, **nav),
  }
  for r in run.rungs:
    out[f"rung-{r}.html"] = render.page("rung.html", title=f"rung {r}", rung=r, rows=run.boards[r],
                                        plotly=False, **nav)
  for d in run.designs:
    out[f"design-{d['id']}.html"] = _design_page(run, d, nav)
    out[f"design-{d['id']}.json"] = d["tree"]  # the design file, as `cli.seeds` writes them
  return out


def write(workdir: str, store: Store | None = None, log: Callable[[str], None] | None = None) -> str:
  """Render the site into WORKDIR/report; returns the overview's path. (`log`: unused, for callers
  that pass their logger.)"""
  own = store is None
  store = store or Store.open(workdir)
  try:
    run = gather.load(workdir, store)
  finally:
    if own:
      store.close()
  site = os.path.join(workdir, "report")
  os.makedirs(site, exist_ok=True)
  plots.write_plotly_js(site)
  html = pages(run)
  for name in sorted(html, key=lambda n: n == "index.html"):  # the overview last: links resolve
    plots.write_atomic(os.path.join(site, name), html[name])
  return os.path.join(site, "index.html")
