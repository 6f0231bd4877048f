"""The run's named random streams (evolution/streams.py) are distinct, and the old collision is gone."""

import jax
import numpy as np

from evolution import streams
from evolution.config import MAX_PROPOSALS, MAX_RETRIES

KEY = jax.random.key(0)


def data(key):
  return tuple(np.asarray(jax.random.key_data(key)).tolist())


def test_every_salt_is_distinct_and_above_the_counters_beside_it():
  salts = list(streams.PROPOSAL_SALTS.values()) + list(streams.RUN_SALTS.values())
  assert len(set(salts)) == len(salts)
  assert min(streams.PROPOSAL_SALTS.values()) >= MAX_RETRIES  # never a try's number
  assert min(streams.RUN_SALTS.values()) >= MAX_PROPOSALS     # never a proposal's index
  assert all(0 < s < 1 << 32 for s in salts)                  # fold_in takes 32-bit data


def test_the_streams_of_a_run_never_share_a_key():
  seen = {}
  for index in range(64):
    keys = {("try", index, t): streams.attempt(KEY, index, t) for t in range(8)}
    keys.update({(name, index): streams.of_proposal(KEY, name, index) for name in streams.PROPOSAL_SALTS})
    keys[("island before mixed", index)] = streams.island(KEY, index, designer_drawn=False)
    keys.update({(name, index): streams.of_run(KEY, name, index) for name in streams.RUN_SALTS})
    for where, key in keys.items():
      if where[0] == "island before mixed":  # the designer's salt: only in runs that draw no designer
        assert data(key) == data(streams.of_proposal(KEY, "designer", index))
        continue
      assert data(key) not in seen, (where, seen.get(data(key)))
      seen[data(key)] = where


def test_the_designer_draw_and_the_island_draw_are_separate_events_in_mixed_runs():
  """They were one event (both salted 1 << 29): which island and whether the LLM designs agreed."""
  for index in range(200):
    assert data(streams.island(KEY, index, designer_drawn=True)) != data(
        streams.of_proposal(KEY, "designer", index))
  islands = [int(jax.random.randint(streams.island(KEY, i, True), (), 0, 2)) for i in range(400)]
  llm = [float(jax.random.uniform(streams.of_proposal(KEY, "designer", i))) < 0.5 for i in range(400)]
  agree = np.mean([a == b for a, b in zip(islands, llm)])
  assert 0.4 < agree < 0.6  # independent: about half agree (200 of 200 did with the shared salt)


def test_runs_without_a_designer_draw_keep_their_recorded_island_stream():
  for index in range(10):
    legacy = jax.random.fold_in(jax.random.fold_in(KEY, index), 1 << 29)
    assert data(streams.island(KEY, index, designer_drawn=False)) == data(legacy)
    assert data(streams.of_run(KEY, "promotion", index)) == data(
        jax.random.fold_in(jax.random.fold_in(KEY, 1 << 30), index))
    assert data(streams.of_run(KEY, "migration", index)) == data(
        jax.random.fold_in(jax.random.fold_in(KEY, 1 << 28), index))
