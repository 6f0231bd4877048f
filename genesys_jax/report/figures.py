"""The report's plotly figures: best-so-far, the ladder funnel, the evolution tree, loss curves."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from genesys_jax.report import gather

OPERATOR_COLORS = {"seed": "#555555", "mutation": "#1f77b4", "crossover": "#d62728",
                   "scratch": "#2ca02c"}


def best_so_far(run: gather.Run) -> go.Figure:
  fig = go.Figure()
  for rung in run.rungs:
    xs, ys = gather.best_so_far(run, rung)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"rung {rung}", line_shape="hv"))
    gpt = next((r["val_bpb"] for r in run.boards[rung] if r["is_seed"] and r["description"] == "gpt"
                and r["val_bpb"] is not None), None)
    if gpt is not None and xs:
      fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[gpt, gpt], mode="lines", name=f"GPT seed @ {rung}",
                               line=dict(dash="dot")))
  fig.update_layout(title="best val_bpb of a discovered design so far, per rung",
                    xaxis_title="proposals", yaxis_title="val_bpb (lower is better)")
  return fig


def funnel(rows: list[dict[str, Any]]) -> go.Figure:
  """Per rung, the promotion slots beside the discovered designs verified there (never above
  them but at the lowest rung, which has no slots: it verifies every valid design), and the seed
  baselines, which take no slot."""
  rungs = [r["rung"] for r in rows]
  fig = go.Figure([
      go.Bar(x=rungs, y=[r["budget"] for r in rows], name="promotion slots for discovered designs",
             text=["every valid design" if r["budget"] is None else "" for r in rows]),
      go.Bar(x=rungs, y=[r["discovered"] for r in rows], name="discovered designs verified"),
      go.Bar(x=rungs, y=[r["baselines"] for r in rows], name="seed baselines (take no slot)"),
  ])
  fig.update_layout(title="the ladder: promotion slots and their use per rung", barmode="group",
                    yaxis_title="verifications")
  return fig


def evolution_tree(run: gather.Run) -> go.Figure:
  """Designs laid out by generation (y) and creation order within it (x); edges coloured by the
  child's operator; nodes by val_bpb at the lowest rung (grey: none), seeds as stars
  (a trace of their own, so the legend's star means "seed"). A click on a node opens its page
  (customdata holds the link; the page's script follows it)."""
  gen = gather.generations(run)
  slot: dict[int, int] = {}
  pos = {}
  for d in run.designs:
    g = gen[d["id"]]
    pos[d["id"]] = (slot.get(g, 0), -g)
    slot[g] = slot.get(g, 0) + 1
  fig = go.Figure()
  by_op: dict[str, tuple[list, list]] = {}
  for e in run.lineage:
    if e["child_id"] in pos and e["parent_id"] in pos:
      op = run.by_id[e["child_id"]]["operator"]
      xs, ys = by_op.setdefault(op, ([], []))
      (x0, y0), (x1, y1) = pos[e["parent_id"]], pos[e["child_id"]]
      xs += [x0, x1, None]
      ys += [y0, y1, None]
  for op, (xs, ys) in sorted(by_op.items()):
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"edge: {op}", hoverinfo="skip",
                             line=dict(color=OPERATOR_COLORS.get(op, "#999"), width=1.5)))
  fit = {d["id"]: gather.lowest_bpb(d, run.rungs) for d in run.designs}
  scored = [v for v in fit.values() if v is not None]
  scale = dict(colorscale="Viridis", reversescale=True, cmin=min(scored, default=0.0),
               cmax=max(scored, default=1.0))
  for name, symbol, keep in (
      ("seed", "star", lambda d: d["operator"] == "seed"),
      ("discovered, trained", "circle", lambda d: d["operator"] != "seed" and fit[d["id"]] is not None),
      ("discovered, no result", "circle", lambda d: d["operator"] != "seed" and fit[d["id"]] is None)):
    ds = [d for d in run.designs if keep(d)]
    if not ds:
      continue
    marker = dict(size=14, symbol=symbol, line=dict(width=1, color="#333"))
    if all(fit[d["id"]] is not None for d in ds):
      marker.update(color=[fit[d["id"]] for d in ds], **scale)
    else:  # no result to colour by (rejected, or training failed)
      marker.update(color="#cccccc")
    fig.add_trace(go.Scatter(
        x=[pos[d["id"]][0] for d in ds], y=[pos[d["id"]][1] for d in ds], mode="markers",
        name=name, marker=marker, customdata=[f"design-{d['id']}.html" for d in ds],
        text=[f"{d['id']} [{d['operator']}] {d['status']}<br>{d['description'][:80]}"
              + (f"<br>val_bpb {fit[d['id']]:.4f}" if fit[d["id"]] is not None else "") for d in ds],
        hovertemplate="%{text}<extra></extra>"))
  if scored:  # one colour bar for every trace coloured by val_bpb (they share cmin and cmax)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                             marker=dict(color=[scale["cmin"]], showscale=True,
                                         colorbar=dict(title="val_bpb"), **scale)))
  fig.update_layout(title="evolution tree (click a node to open its design)",
                    legend=dict(orientation="h", y=-0.05),
                    xaxis=dict(visible=False), yaxis=dict(title="generation", tickvals=sorted({-g for g in gen.values()}),
                                                          ticktext=[str(-v) for v in sorted({-g for g in gen.values()})]))
  return fig


def loss_curves(d: dict[str, Any]) -> go.Figure | None:
  fig = go.Figure()
  for rung, m in d["metrics"].items():
    curve = m.get("loss_curve")
    if curve:
      fig.add_trace(go.Scatter(x=[c[0] for c in curve], y=[c[1] for c in curve], mode="lines",
                               name=f"rung {rung}"))
  if not fig.data:
    return None
  fig.update_layout(title="training loss", xaxis_title="step", yaxis_title="loss (nats/token)")
  return fig
