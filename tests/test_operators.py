import jax
import pytest
from hypothesis import given, settings, strategies as st

from evolution import operators, selection
from gab import registry, seeds
from gab.tree import Unit


def _trees():
  """The GPT seed and a few of its descendants, to mutate from varied starting points."""
  trees = [seeds.seed("gpt")]
  for i in range(6):
    trees.append(operators.mutate(jax.random.key(1000 + i), trees[-1])[0])
  return trees


TREES = _trees()


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), which=st.integers(0, len(TREES) - 1))
def test_mutation_yields_well_typed_changed_trees(seed, which):
  parent = TREES[which]
  child, description = operators.mutate(jax.random.key(seed), parent)
  assert registry.type_errors(child) == []
  assert child != parent and child.content_hash() != parent.content_hash()
  assert description.split(":")[0] in operators.MUTATIONS
  assert child == registry.normalize(child)


@pytest.mark.parametrize("name", list(operators.MUTATIONS))
def test_each_mutation_is_deterministic_and_does_what_it_says(name):
  op = operators.MUTATIONS[name]
  parent = seeds.seed("gpt")
  for s in range(20):
    out = op(jax.random.key(s), parent)
    assert out is not None
    child, description = out
    assert op(jax.random.key(s), parent) == out
    assert registry.type_errors(child) == []
    if name == "hparam":
      assert child.size() == parent.size() and "->" in description
    elif name == "replace":
      assert child.size() == parent.size()
      assert sorted(u.kind for _, u in child.walk()) != sorted(u.kind for _, u in parent.walk())
    else:
      assert child.size() > parent.size() and description.startswith("wrap ")


def test_selection_is_deterministic_and_prefers_the_fit():
  pool = [{"id": f"d{i}", "fitness": -float(i)} for i in range(8)]
  picks = [selection.select_parent(jax.random.key(s), pool, exploit_prob=1.0)["id"] for s in range(50)]
  assert set(picks) <= {"d0", "d1"}
  again = [selection.select_parent(jax.random.key(s), pool, exploit_prob=1.0)["id"] for s in range(50)]
  assert picks == again
  explore = {selection.select_parent(jax.random.key(s), pool, exploit_prob=0.0)["id"] for s in range(50)}
  assert explore <= {f"d{i}" for i in range(2, 8)} and len(explore) > 3
  with pytest.raises(ValueError, match="no verified design"):
    selection.select_parent(jax.random.key(0), [])


def test_unit_roundtrip_of_mutants():
  for tree in TREES:
    assert Unit.from_dict(tree.to_dict()) == tree
