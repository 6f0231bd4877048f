"""The experiment's page: DIR/experiment.html, the arms' table and their best-so-far curves."""

from __future__ import annotations

import os
from typing import Any

import plotly.graph_objects as go

from genesys_jax.report import plots, render


def figure(doc: dict[str, Any]) -> go.Figure:
  """Best-so-far lowest-rung bpb against proposals, one line per (arm, seed)."""
  fig = go.Figure()
  palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
  for run in doc["runs"]:
    color = palette[doc["arms"].index(run["arm"]) % len(palette)]
    curve = run.get("best_so_far") or []
    fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines+markers",
                             name=f"{run['arm']} seed {run['seed']}", line=dict(color=color)))
  fig.update_layout(title=f"best-so-far val_bpb at rung {doc['rungs'][0]}",
                    xaxis_title="proposal", yaxis_title="val_bpb (lower is better)")
  return fig


def bars(doc: dict[str, Any]) -> go.Figure:
  """Best top-rung bpb per arm, mean +- sd, with the GPT seed's as a line."""
  rows = [r for r in doc["table"] if r["best_top_bpb"] is not None]
  fig = go.Figure(go.Bar(x=[r["arm"] for r in rows], y=[r["best_top_bpb"] for r in rows],
                         error_y=dict(type="data", array=[r["best_top_bpb_sd"] for r in rows]),
                         name="best discovered"))
  gpts = [r["gpt_top_bpb"] for r in doc["table"] if r["gpt_top_bpb"] is not None]
  if gpts:
    fig.add_hline(y=sum(gpts) / len(gpts), line_dash="dash", annotation_text="GPT seed")
  fig.update_layout(title=f"best val_bpb at the top rung ({doc['rungs'][-1]})", yaxis_title="val_bpb")
  return fig


def write(workdir: str, doc: dict[str, Any]) -> str:
  plots.write_plotly_js(workdir)
  html = render.page("experiment.html", title="experiment", root=".", doc=doc,
                     curves=plots.div(figure(doc)), bars=plots.div(bars(doc), height=360))
  path = os.path.join(workdir, "experiment.html")
  plots.write_atomic(path, html)
  return path
