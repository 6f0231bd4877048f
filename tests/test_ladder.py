import pytest

from genesys_jax import ladder


def test_budgets_follow_the_ratio_from_the_top():
  assert ladder.budgets(5, 1, 0.25) == [256, 64, 16, 4, 1]
  assert ladder.budgets(3, 2, 0.5) == [8, 4, 2]
  assert ladder.budgets(1, 3, 0.25) == [3]
  with pytest.raises(ValueError, match="0 < ratio <= 1"):
    ladder.budgets(3, 1, 0.0)


def test_dynamic_release_opens_one_slot_per_inverse_ratio_verifications():
  budget = ladder.budgets(3, 1, 0.25)  # [16, 4, 1]
  assert ladder.released(budget, [0, 0, 0], 0.25) == [16, 0, 0]
  assert ladder.released(budget, [3, 0, 0], 0.25) == [16, 0, 0]
  assert ladder.released(budget, [4, 0, 0], 0.25) == [16, 1, 0]
  assert ladder.released(budget, [11, 2, 0], 0.25) == [16, 2, 0]
  assert ladder.released(budget, [40, 4, 0], 0.25) == [16, 4, 1]  # capped by the budget


def test_next_rung_is_the_lowest_with_an_open_slot():
  budget = ladder.budgets(3, 1, 0.5)  # [4, 2, 1]
  assert ladder.next_rung(budget, [1, 0, 0], 0.5) is None
  assert ladder.next_rung(budget, [2, 0, 0], 0.5) == 1
  assert ladder.next_rung(budget, [2, 1, 0], 0.5) is None
  assert ladder.next_rung(budget, [4, 2, 0], 0.5) == 2
  assert ladder.next_rung(budget, [9, 2, 1], 0.5) is None
