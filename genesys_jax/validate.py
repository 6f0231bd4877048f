"""Config validation, before a run writes anything.

`check_config(config)` raises `ConfigError` listing every problem, one line each: a value out of
its field's rule (`config.rungs.tiny.batch_size = 0: expected an integer >= 1`), an unknown or
missing field, a section's own cross-field rule (probabilities summing to 1, a rung's token
budget), and the rules across sections below. The rules of each field are defined once, with the
field, in its section's record (genesys_jax/run_config.py); nothing here restates them.
"""

from __future__ import annotations

from typing import Iterable

from evolution.jobqueue import CHECK_JOB
from gab import fields
from genesys_jax.run_config import RunConfig
from train.rung import Rung


class ConfigError(ValueError):
  """One or more config fields are invalid; `lines` holds one message per field."""

  def __init__(self, lines: list[str]):
    self.lines = list(lines)
    super().__init__("\n".join(self.lines))


def config_errors(config, processes: int = 1, rungs: Iterable[str] | None = None) -> list[str]:
  """Every problem of `config`, one line each (empty: the config is valid).

  `rungs` limits the per-rung checks to those rungs (default: all of config.rungs)."""
  out = fields.errors(RunConfig, config, "config", skip=("rungs",))
  if "rungs" not in config:
    return out + ["config.rungs: missing (expected the rungs by name)"]
  table = config.rungs
  names = list(table.keys()) if rungs is None else [r for r in rungs if r in table]
  valid = []
  for name in names:
    lines = fields.errors(Rung, table[name], f"config.rungs.{name}")
    out += lines
    if not lines:
      valid.append(name)
  if CHECK_JOB in table:
    out.append(f"config.rungs.{CHECK_JOB}: {CHECK_JOB!r} is reserved (the job queue's name for checker "
               f"jobs); rename the rung")
  ladder = config.get("ladder")
  if ladder is not None and fields.strings(ladder.get("rungs")) is None:
    missing = [r for r in ladder.rungs if r not in table]
    if missing:
      out.append(f"config.ladder.rungs names {missing}, but config.rungs has only {sorted(table)}")
  for name in valid:
    batch, accum = table[name].batch_size, table[name].grad_accum
    if batch % (accum * processes):
      out.append(f"config.rungs.{name}.batch_size = {batch}: expected a multiple of grad_accum "
                 f"{accum} x {processes} processes")
  return out


def check_config(config, processes: int = 1, rungs: Iterable[str] | None = None) -> None:
  """Raise `ConfigError` (one line per problem) unless `config` is valid."""
  errors = config_errors(config, processes, rungs)
  if errors:
    raise ConfigError(errors)
