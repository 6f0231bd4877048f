"""The run's random streams: every random choice of the loop comes from one key, `key(config.seed)`,
through one of the named streams below, so that no two choices ever share randomness.

- per proposal `i`: `fold_in(run_key, i)`, the proposal's key. Its try `t` (a GP draw of mode,
  parents and child; t < evolution.max_retries) is `fold_in(proposal_key, t)`; the salted streams
  under it are PROPOSAL_SALTS (which designer makes it, which island it comes from).
- per run: RUN_SALTS, each folded into the run key and then given its counter (the migration after
  proposal n; the promotion after v verifications).
Every salt is at least `evolution/config.py`'s bound on the counter it sits beside (proposal indices
below MAX_PROPOSALS, tries below MAX_RETRIES), so a salted stream never meets an index or a try;
tests/test_streams.py checks that every salt is distinct and that the streams' keys differ.

The island stream had the designer's salt (1 << 29) until that was found to make "which island" and
"is it an LLM proposal" one random event; runs that never draw a designer (designer.kind other than
mixed) still take the island from that salt, so that every run recorded before replays exactly
(README "Seeded replay"): only mixed runs with islands draw their islands from "island".
"""

from __future__ import annotations

import jax

from evolution.config import MAX_PROPOSALS, MAX_RETRIES

PROPOSAL_SALTS = {
    "designer": 1 << 29,  # gp or an LLM designer (designer.kind = mixed)
    "island": 1 << 31,    # the island a proposal's parents come from (evolution.islands > 0)
}
RUN_SALTS = {
    "migration": 1 << 28,  # islands: who migrates after proposal n
    "promotion": 1 << 30,  # the ladder: which design is promoted after v verifications
}
ISLAND_BEFORE_MIXED = PROPOSAL_SALTS["designer"]  # the island stream of runs without a designer draw
assert min(PROPOSAL_SALTS.values()) >= MAX_RETRIES and min(RUN_SALTS.values()) >= MAX_PROPOSALS


def proposal(run_key: jax.Array, index: int) -> jax.Array:
  return jax.random.fold_in(run_key, index)


def attempt(run_key: jax.Array, index: int, attempt_: int) -> jax.Array:
  """The key of try `attempt_` of proposal `index`."""
  return jax.random.fold_in(proposal(run_key, index), attempt_)


def of_proposal(run_key: jax.Array, name: str, index: int) -> jax.Array:
  """Stream `name` of PROPOSAL_SALTS for proposal `index`."""
  return jax.random.fold_in(proposal(run_key, index), PROPOSAL_SALTS[name])


def island(run_key: jax.Array, index: int, designer_drawn: bool) -> jax.Array:
  """The island stream of proposal `index` (`designer_drawn`: the run draws designers, mixed)."""
  if designer_drawn:
    return of_proposal(run_key, "island", index)
  return jax.random.fold_in(proposal(run_key, index), ISLAND_BEFORE_MIXED)


def of_run(run_key: jax.Array, name: str, count: int) -> jax.Array:
  """Stream `name` of RUN_SALTS at its counter `count`."""
  return jax.random.fold_in(jax.random.fold_in(run_key, RUN_SALTS[name]), count)
