"""Plotly figures as HTML fragments, with plotly.js shipped from the installed package (no CDN).

Every page loads `plotly.min.js` from the site's own folder, written once from
`plotly.offline.get_plotlyjs()`, so the report works from file:// with no network at all.
"""

from __future__ import annotations

import os

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from gab import atomic

PLOTLY_JS = "plotly.min.js"
_CONFIG = {"displaylogo": False, "responsive": True}


def write_atomic(path: str, text: str) -> None:
  """Write `text` to `path` so that a reader sees the old file or the new one, never half of one."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  atomic.write(path, text, fsync=False)  # rewritten after every verification: no fsync each time


def write_plotly_js(site_dir: str) -> None:
  """plotly.js beside the pages (rewritten only when the installed plotly's differs)."""
  js = get_plotlyjs()
  path = os.path.join(site_dir, PLOTLY_JS)
  if not os.path.exists(path) or os.path.getsize(path) != len(js.encode("utf-8")):
    write_atomic(path, js)


def div(fig: go.Figure, height: int = 420) -> str:
  """The figure as a <div> + script fragment; the page must load plotly.min.js first."""
  fig.update_layout(height=height, margin=dict(l=50, r=20, t=40, b=40), template="plotly_white")
  return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=_CONFIG)
