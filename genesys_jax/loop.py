"""The evolution loop: propose -> check -> record -> verify on the ladder -> select, resumable.

Every proposal `i` draws its randomness from `fold_in(key(seed), i)` and from the store's history,
and every promotion from the number of verifications so far; the store commits one transaction per
step. So a run restarted on the same workdir (after any crash) continues exactly where it stopped,
and the same config and seed give the same designs in the same order (`replay_from` checks it).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable

import jax
import ml_collections

from evolution import integrity, operators
from evolution.designers import config as designer_config
from genesys_jax import (code_units, controller, leaderboard, proposing, replay, resolve, runlock,
                         validate, verifying)
from train import data as data_lib

Log = Callable[[str], None]


def _print(line: str) -> None:
  print(line, flush=True)


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str, log: Log) -> str:
  """Keep the resolved config with the run; warn when a resumed run's config differs."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(sort_keys=True, indent=1)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() != text:
        log(f"warning: config differs from the one recorded in {path}; continuing with the new one")
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):  # a full disk leaves no half-written config.json.tmp
      os.remove(tmp)
    if isinstance(e, OSError) and not e.filename:  # a failed write() names no file: name it
      raise OSError(e.errno, e.strerror, tmp) from None
    raise
  return text


class Evolution(proposing.Proposing, verifying.Verifying):
  """One run of the loop over a workdir: its state, with the proposing (`genesys_jax.proposing`) and
  verifying (`genesys_jax.verifying`) halves, and `run`."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Log = _print):
    config = resolve.resolve(config)  # rungs' seq_len, the checker's vocab_size: once, for the run
    self.config, self.workdir, self.log = config, workdir, log
    self.rungs = list(config.ladder.rungs)
    if not self.rungs:
      raise ValueError("config.ladder.rungs is empty: expected at least one rung name")
    missing = [r for r in self.rungs if r not in config.rungs]
    if missing:
      raise ValueError(f"ladder.rungs names {missing}, but config.rungs has only {sorted(config.rungs)}")
    api_key = designer_config.validate(config)  # an LLM run without a key fails here, before any write
    os.makedirs(workdir, exist_ok=True)
    self.config_json = write_resolved_config(config, workdir, log)
    self.store = controller.open_store(config, workdir)  # SQLite in the workdir, or config.store.url
    self.key = jax.random.key(config.seed)
    self.designers = None
    if config.get("designer") and config.designer.kind != "gp":
      from genesys_jax.designers import LLMDesigners  # pylint: disable=g-import-not-at-top
      self.designers = LLMDesigners(config, self.store, api_key)
    self.bounds = operators.Bounds.from_config(config.evolution)
    self.n_islands = int(config.evolution.get("islands", 0) or 0)
    self._data = None
    self.code_kinds = code_units.setup(config, self.store)  # declared only: no unit code runs here
    self._fingerprints: dict[str, str | None] = {}  # of the designs `check` passed, by content hash

  @property
  def data(self) -> data_lib.Corpus:
    if self._data is None:
      self._data = data_lib.load_corpus(self.config.data)
    return self._data

  def rung(self, name: str) -> ml_collections.ConfigDict:
    """The rung's config (resolved: with the context length the data is packed at)."""
    return self.config.rungs[name]

  def checker_config(self) -> ml_collections.ConfigDict:
    """The checker's config (resolved: sizing against the data's real vocabulary)."""
    return self.config.checker

  # -- the run -------------------------------------------------------------------------------
  def run(self) -> list[dict[str, Any]]:
    controller.start(self)
    self.data  # noqa: B018 - prepared before the first check: a bad corpus stops the run here
    self.add_seeds()
    n = self.config.evolution.n_proposals
    done = self.store.get_meta("proposals_done", 0)
    if controller.at_barrier(self.config, done):  # not in the middle of a generation
      self.verify_pending()
    if done:
      self.log(f"resuming {self.workdir}: {done}/{n} proposals already made")
    for index in range(done, n):
      try:
        self.step(index, n)
      except designer_config.BudgetStop as e:
        self.log(f"{e}: stopped cleanly before proposal {index + 1}; raise designer.max_usd and run "
                 f"again on this workdir to resume")
        self.verify_pending()
        break
      if controller.at_barrier(self.config, index + 1):
        self.verify_pending()
    controller.finish(self)
    self.refresh_report()
    board = leaderboard.rows(self.store, self.rungs)
    self.log(leaderboard.format_rungs(leaderboard.by_rung(self.store, self.rungs), self.rungs))
    self.log(leaderboard.format_table(board, self.rungs))
    if self.config.get("replay_from"):
      self.report_replay()
    return board

  def report_replay(self) -> dict[str, Any]:
    old = self.config.replay_from
    for line in replay.config_differences(old, self.config_json):
      self.log(f"replay: config differs from {old}: {line}")
    result = replay.compare(old, self.store)
    self.store.add_artifact(None, "replay", json.dumps(result, sort_keys=True))
    if result["diverged"]:
      self.log(f"replay: DIVERGED from {old} at {result['first_divergence']}")
    else:
      self.log(f"replay: identical to {old} ({result['designs']} designs, same metrics)")
    return result


def run(config: ml_collections.ConfigDict, workdir: str, log: Log = _print) -> list[dict[str, Any]]:
  """Validate the config (before anything is written), hold the workdir's controller lock, run."""
  validate.check_config(config)
  with runlock.hold(workdir, "controller", log):
    evo = Evolution(config, workdir, log)
    try:
      integrity.check_workdir(evo.store, workdir)  # history the store lost: stop, don't redo it
      return evo.run()
    finally:
      if evo.designers is not None:
        evo.designers.close()  # stops a local LLM endpoint the run started
      evo.store.close()
