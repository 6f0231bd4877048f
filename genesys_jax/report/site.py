"""The run's static site under WORKDIR/report (placeholder; filled in below)."""

from __future__ import annotations


def write(workdir, store, log=print):
  return None
