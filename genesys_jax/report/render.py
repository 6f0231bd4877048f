"""Jinja2 templates of the report (genesys_jax/report/templates), autoescaped."""

from __future__ import annotations

import functools
import os
from typing import Any

import jinja2


def fmt(x: Any, spec: str = ".4f") -> str:
  """A number for a table cell: '-' for None."""
  if x is None:
    return "-"
  try:
    return format(x, spec)
  except (TypeError, ValueError):
    return str(x)


@functools.lru_cache(maxsize=1)
def env() -> jinja2.Environment:
  e = jinja2.Environment(
      loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
      autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
      trim_blocks=True, lstrip_blocks=True)
  e.filters["fmt"] = fmt
  return e


def page(template: str, **context: Any) -> str:
  return env().get_template(template).render(**context)
