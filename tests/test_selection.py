"""Selection (rank-aggregated fitness, quadrants, designers, promotion candidates) and islands."""

from collections import Counter

import jax
import pytest
from hypothesis import given, settings, strategies as st

from evolution import islands as isl
from evolution import selection

RUNGS = ("tiny", "small", "medium")


def design(name, **bpb_by_rung):
  return {"id": name, "metrics": {r: {"val_bpb": v} for r, v in bpb_by_rung.items()}}


def test_percentiles_are_mid_ranks():
  assert selection.percentiles([3.0]) == [0.5]
  assert selection.percentiles([1.0, 3.0, 2.0, 3.0]) == [0.125, 0.75, 0.375, 0.75]


def test_fitness_ranks_within_rungs_and_weights_rungs_by_index():
  pool = [design("a", tiny=1.0), design("b", tiny=2.0, small=1.5), design("c", tiny=3.0, small=1.4),
          design("d")]
  fit = selection.fitness(pool, RUNGS)
  assert fit["d"] is None and fit["a"] == pytest.approx(5 / 6)
  assert fit["b"] == pytest.approx((1 * 0.5 + 2 * 0.25) / 3)    # 2nd of 3 at tiny, 2nd of 2 at small
  assert fit["c"] == pytest.approx((1 * 1 / 6 + 2 * 0.75) / 3)   # last at tiny, best at small
  # Ranks, not raw values: rescaling one rung or an outlier bpb changes nothing.
  scaled = [design("a", tiny=10.0), design("b", tiny=20.0, small=1.5), design("c", tiny=900.0, small=1.4),
            design("d")]
  assert selection.fitness(scaled, RUNGS) == fit
  assert selection.confidence(pool[2], RUNGS) == 3.0 and selection.confidence(pool[3], RUNGS) == 0.0


def test_zero_shot_scores_join_the_rung_rank():
  pool = [design("a", tiny=1.0), design("b", tiny=2.0)]
  pool[1]["metrics"]["tiny"]["zeroshot"] = {"piqa": 0.7, "arc": 0.4}
  pool[0]["metrics"]["tiny"]["zeroshot"] = {"piqa": 0.6, "arc": 0.5}
  scores = selection.rung_scores(pool, "tiny", zeroshot_weight=0.5)
  assert scores == {"a": pytest.approx(0.5 * 0.75 + 0.5 * 0.5), "b": pytest.approx(0.5 * 0.25 + 0.5 * 0.5)}
  assert selection.rung_scores(pool, "tiny", zeroshot_weight=1.0) == {"a": 0.5, "b": 0.5}


def _population():
  """16 designs: fitness falls with the index; every 4th one is verified at two more rungs."""
  pool = []
  for i in range(16):
    rungs = {"tiny": 1.0 + i / 10}
    if i % 4 == 0:
      rungs.update(small=1.0 + i / 10, medium=1.0 + i / 10)
    pool.append(design(f"d{i:02d}", **rungs))
  return pool


def test_quadrants_split_at_the_upper_quartiles():
  quads = selection.quadrants(_population(), RUNGS)
  names = {q: [d["id"] for d in ds] for q, ds in quads.items()}
  # Fitness order d01, d00, d02, d03, d05, d04, ...: d04 ranks only 2nd of 4 at the upper rungs.
  assert names["good_confident"] == ["d00"]
  assert names["good_unconfident"] == ["d01", "d02", "d03"]
  assert names["poor_confident"] == ["d04", "d08", "d12"]
  assert len(names["poor_unconfident"]) == 9


def test_designers_exploit_good_confident_designs_with_probability_exploit_prob():
  pool = _population()
  pool[15]["is_seed"] = True
  picks = [selection.select_parent(jax.random.key(s), pool, rungs=RUNGS)["id"] for s in range(600)]
  assert picks == [selection.select_parent(jax.random.key(s), pool, rungs=RUNGS)["id"] for s in range(600)]
  counts = Counter(picks)
  assert abs(counts["d00"] / 600 - 0.95 * 0.8) < 0.06
  assert abs(counts["d15"] / 600 - (0.05 + 0.95 * 0.2 / 15)) < 0.03   # the seed: re-drawn + explored
  assert len(counts) == 16


def test_select_parent_keeps_the_precomputed_fitness_interface():
  pool = [{"id": f"d{i}", "fitness": -float(i)} for i in range(8)]
  picks = [selection.select_parent(jax.random.key(s), pool, exploit_prob=1.0)["id"] for s in range(50)]
  assert set(picks) <= {"d0", "d1"}
  explore = {selection.select_parent(jax.random.key(s), pool, exploit_prob=0.0)["id"] for s in range(50)}
  assert explore <= {f"d{i}" for i in range(2, 8)} and len(explore) > 3
  with pytest.raises(ValueError, match="no verified design"):
    selection.select_parent(jax.random.key(0), [])


def test_select_parents_are_distinct():
  pool = _population()
  for s in range(20):
    ids = [d["id"] for d in selection.select_parents(jax.random.key(s), pool, 3, rungs=RUNGS)]
    assert len(set(ids)) == 3
  assert len(selection.select_parents(jax.random.key(0), pool[:1], 2, rungs=RUNGS)) == 2


def test_promotion_candidates_rank_in_the_top_fraction_of_their_rung_baselines_included():
  def d(name, status="verified", seed=False, **bpb):
    return dict(design(name, **bpb), status=status, is_seed=seed)
  pool = [d("gpt", seed=True, tiny=3.0, small=2.8), d("a", tiny=3.1), d("b", tiny=2.9),
          d("c", tiny=2.7, small=2.5), d("e", tiny=2.95), d("f", status="failed", tiny=None),
          d("g", tiny=2.8)]
  # Six results at tiny (f failed): the top ceil(0.5 x 6) = 3 are c 2.7, g 2.8, b 2.9; c is at small.
  assert [x["id"] for x in selection.promotion_candidates(pool, "tiny", "small", 0.5, 3)] == ["g", "b"]
  # The top quarter (2 of 6): c and g; a design worse than GPT (a 3.1) never is a candidate.
  assert [x["id"] for x in selection.promotion_candidates(pool, "tiny", "small", 0.25, 3)] == ["g"]
  assert selection.promotion_candidates(pool, "tiny", "small", 0.25, 7) == []  # 6 seen < min_seen 7
  # At small, GPT and c: c, better than GPT there, is the top half (1 of 2) and may go to medium.
  assert selection.promotion_candidates(pool, "small", "medium", 0.5, 2) == [pool[3]]
  pool[0]["metrics"]["small"]["val_bpb"] = 2.4  # GPT better than c: the top half is GPT alone
  assert selection.promotion_candidates(pool, "small", "medium", 0.5, 2) == []
  ties = [d("gpt", seed=True, tiny=3.0), d("x", tiny=2.0), d("y", tiny=2.0), d("z", tiny=4.0)]
  assert [x["id"] for x in selection.promotion_candidates(ties, "tiny", "small", 0.25, 3)] == ["x", "y"]


def test_pick_promotion_takes_the_best_candidate_with_probability_exploit_prob():
  pool = [design(n) for n in "abc"]
  picks = Counter(selection.pick_promotion(jax.random.key(s), pool, 0.8)["id"] for s in range(400))
  assert abs(picks["a"] / 400 - 0.8) < 0.06 and picks["b"] and picks["c"]
  assert {selection.pick_promotion(jax.random.key(s), pool, 1.0)["id"] for s in range(50)} == {"a"}
  assert selection.pick_promotion(jax.random.key(0), pool[:1], 0.0)["id"] == "a"


# -- islands ------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_islands=st.integers(1, 5), n_designs=st.integers(1, 40),
       interval=st.integers(1, 8))
def test_islands_invariants(seed, n_islands, n_designs, interval):
  def run(seed):
    key = jax.random.key(seed)
    state, fitness, ids = isl.create(n_islands), {}, []
    for i in range(n_designs):
      k_island, k_parent, k_fit, k_migrate = jax.random.split(jax.random.fold_in(key, i), 4)
      island = isl.choose_island(k_island, state)
      pool = state.pool(island)
      parent = [pool[int(jax.random.randint(k_parent, (), 0, len(pool)))]] if pool and i % 5 else []
      name = f"d{i}"
      state = isl.add(state, name, parent)
      assert not parent or state.home(name) == state.home(parent[0])
      fitness[name] = None if i % 7 == 3 else float(jax.random.uniform(k_fit))
      ids.append(name)
      if isl.due(i + 1, interval):
        before = state
        state = isl.migrate(k_migrate, state, fitness)
        assert state.residents == before.residents
        _check_migration(before, state, fitness)
    return state, ids

  state, ids = run(seed)
  homes = [i for d in ids for i, r in enumerate(state.residents) if d in r]
  assert len(homes) == len(ids) == sum(len(r) for r in state.residents)   # each on exactly one island
  for i in range(state.n):
    assert len(set(state.pool(i))) == len(state.pool(i))                # guests are not residents
  assert run(seed) == (state, ids)
  assert isl.Islands.from_json(state.to_json()) == state


def _check_migration(before, after, fitness):
  """Each new guest is the best design of an island at least as strong as the one receiving it."""
  best = [isl.best_of(before, i, fitness) for i in range(before.n)]
  strength = [float("-inf") if b is None else fitness[b] for b in best]
  for i in range(before.n):
    new = after.guests[i][len(before.guests[i]):]
    assert after.guests[i][:len(before.guests[i])] == before.guests[i] and len(new) <= 1
    for guest in new:
      assert guest not in before.pool(i)
      assert any(best[j] == guest and strength[j] >= strength[i] for j in range(before.n) if j != i)


def test_migration_copies_the_best_of_strong_islands_to_weak_ones():
  state = isl.create(4)
  for i, name in enumerate(["a", "b", "c", "d", "e", "f", "g", "h"]):
    state = isl.add(state, name)                          # round robin: island i % 4
  assert [state.home(n) for n in "abcdefgh"] == [0, 1, 2, 3, 0, 1, 2, 3]
  fitness = dict(zip("abcdefgh", [0.9, 0.1, 0.5, 0.2, 0.3, 0.15, 0.4, 0.05]))
  migrated = isl.migrate(jax.random.key(0), state, fitness)
  assert migrated.residents == state.residents
  assert migrated.guests[0] == () and migrated.guests[2] == ()   # the strong half receives nothing
  for weak in (1, 3):
    assert migrated.guests[weak] in (("a",), ("c",))             # the best of island 0 or of 2
  assert isl.migrate(jax.random.key(0), state, fitness) == migrated
  assert {isl.migrate(jax.random.key(s), state, fitness).guests[1] for s in range(20)} == {("a",), ("c",)}
  assert isl.add(state, "z", ["c"]).home("z") == 2 and isl.add(state, "a").home("a") == 0
  assert isl.due(10, 5) and not isl.due(9, 5) and not isl.due(10, 0)
