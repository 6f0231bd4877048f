import types

import pytest

from genesys_jax import ladder


def test_budgets_follow_the_ratio_from_the_top():
  assert ladder.budgets(5, 1, 0.25) == [256, 64, 16, 4, 1]
  assert ladder.budgets(3, 2, 0.5) == [8, 4, 2]
  assert ladder.budgets(1, 3, 0.25) == [3]
  with pytest.raises(ValueError, match="0 < ratio <= 1"):
    ladder.budgets(3, 1, 0.0)


def test_slots_open_with_the_share_of_the_rung_below_seen_and_all_once_it_is_final():
  assert [ladder.opened(2, seen, 12, False) for seen in (0, 5, 6, 11, 12, 20)] == [0, 0, 1, 1, 2, 2]
  assert ladder.opened(2, 3, 12, True) == 2          # no more results will come: every slot opens
  assert ladder.opened(1, 1, 2, False) == 0 and ladder.opened(1, 2, 2, False) == 1
  budget = ladder.budgets(3, 1, 0.25)  # [16, 4, 1]: a higher rung expects its budget, as before
  assert [ladder.opened(budget[1], seen, budget[0], False) for seen in (3, 4, 11, 40)] == [0, 1, 2, 4]


def _designs(tiny, small=None, seed_tiny=3.0, seed_small=2.8):
  """GPT and discovered designs d0, d1, ... with these val_bpb at tiny (and at small)."""
  small = small or {}
  out = [{"id": "gpt", "is_seed": True, "status": "verified",
          "metrics": {"tiny": {"val_bpb": seed_tiny}, "small": {"val_bpb": seed_small}}}]
  for i, bpb in enumerate(tiny):
    m = {"tiny": {"val_bpb": bpb}}
    if f"d{i}" in small:
      m["small"] = {"val_bpb": small[f"d{i}"]}
    out.append({"id": f"d{i}", "is_seed": False, "status": "verified", "metrics": m})
  return out


LAD = types.SimpleNamespace(n_target=1, ratio=0.5, top_fraction=0.25, min_seen=3)
RUNGS = ("tiny", "small", "medium")


def _promote(designs, done, n=12):
  found = ladder.promotion(designs, RUNGS, LAD, n, done, 0.5)
  return None if found is None else (found[0], [d["id"] for d in found[1]])


def test_promotion_waits_for_evidence_and_gives_the_slots_to_the_best():
  """The default ladder (tiny -> small -> medium, 2 and 1 slots, 12 proposals), its designs'
  results at tiny coming in one per proposal: the issue's run spent every slot by proposal 4, one
  on a design worse than GPT, and never promoted a later one that beat GPT."""
  tiny = [3.05, 2.99, 3.2, 2.95, 3.1, 2.97, 2.9, 3.3, 2.85]
  for k in range(1, 6):  # under half of the 12 expected results at tiny: no small slot yet
    assert _promote(_designs(tiny[:k]), k) is None
  # Six results: one slot; the top quarter of 7 (GPT included) is 2: d5 2.97 and d3 2.95.
  assert _promote(_designs(tiny[:6]), 6) == (1, ["d3", "d5"])
  assert _promote(_designs(tiny[:6], {"d3": 2.75}), 6) is None      # the slot is used
  # After proposal 9 the top quarter of 10 (3: d8 2.85, d6 2.9, d3 2.95) holds no one worse than GPT.
  assert _promote(_designs(tiny, {"d3": 2.75}), 9) is None          # 9 of 12: still one slot
  # The last proposals are rejected: at the end every slot opens, the second to the best left.
  assert _promote(_designs(tiny, {"d3": 2.75}), 12) == (1, ["d8", "d6"])
  # Medium's one slot opens once small has its two results (its budget), for a design that beat
  # GPT there (the top quarter of GPT and two designs is one).
  assert _promote(_designs(tiny, {"d3": 2.75, "d8": 2.85}), 12) == (2, ["d3"])
  assert _promote(_designs(tiny, {"d3": 2.9, "d8": 2.85}), 12) is None   # GPT best at small
  assert _promote(_designs([3.1, 3.2, 3.3]), 12) is None   # nothing beat GPT: nothing goes up


def test_promotion_needs_min_seen_results_at_the_rung_below():
  assert _promote(_designs([2.5]), 12) is None               # GPT and one design: 2 < 3
  assert _promote(_designs([2.5, 3.5]), 12) == (1, ["d0"])
