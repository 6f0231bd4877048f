"""GP operators: every output is acceptable, bounded, deterministic and changed as described."""

import re
from collections import Counter

import jax
import pytest
from hypothesis import assume, given, settings, strategies as st

from evolution import operators
from evolution.canonical import canonical_id
from evolution.operators import Bounds
from gab import registry, seeds
from gab.tree import Unit

U = Unit.make
SMALL = Bounds(max_depth=6, max_size=16)


def _trees():
  """The GPT seed, a chain of its descendants and a few scratch designs: varied parents."""
  trees = [seeds.seed("gpt")]
  for i in range(6):
    trees.append(operators.mutate(jax.random.key(1000 + i), trees[-1])[0])
  trees += [operators.scratch(jax.random.key(2000 + i), SMALL)[0] for i in range(4)]
  return trees


TREES = _trees()
KEYS = st.integers(0, 2**31 - 1)
PARENTS = st.integers(0, len(TREES) - 1)


def _path(description: str) -> tuple[int, ...]:
  """The first `at [i, j]` of a description: where the change happened."""
  found = re.search(r"at \[([\d, ]*)\]", description)
  return tuple(int(i) for i in found.group(1).split(",") if i.strip())


def _units(tree: Unit) -> Counter:
  return Counter((u.kind, u.params) for _, u in tree.walk())


def _acceptable(child: Unit, parents, bounds: Bounds = Bounds()) -> None:
  assert operators.violations(child, bounds) == []
  assert child == registry.normalize(child)
  assert canonical_id(child) not in [canonical_id(p) for p in parents]


@settings(max_examples=60, deadline=None)
@given(seed=KEYS, which=PARENTS, name=st.sampled_from(list(operators.MUTATIONS)))
def test_each_mutation_does_what_it_says(seed, which, name):
  parent = TREES[which]
  op = operators.MUTATIONS[name]
  out = op(jax.random.key(seed), parent)
  assume(out is not None)
  child, description = out
  assert op(jax.random.key(seed), parent) == out
  _acceptable(child, [parent])
  path = _path(description)
  if name == "hparam":
    assert [(p, u.kind) for p, u in child.walk()] == [(p, u.kind) for p, u in parent.walk()]
    diffs = [(p, k) for (p, u), (_, v) in zip(child.walk(), parent.walk())
             for k in u.hparams if u.hparams[k] != v.hparams[k]]
    assert diffs == [(path, diffs[0][1])] and "->" in description
  elif name == "replace":
    old, new = parent.get(path), child.get(path)
    assert path and registry.get(old.kind).role == registry.get(new.kind).role
    assert child.replace(path, old) == parent
  elif name == "insert":
    wrapper = child.get(path)
    assert parent.get(path) in wrapper.children and child.replace(path, parent.get(path)) == parent
    assert child.size() > parent.size() and description.startswith("wrap ")
  elif name == "delete":
    assert child.size() < parent.size()
  else:
    assert _units(child) == _units(parent) and child != parent


@settings(max_examples=40, deadline=None)
@given(seed=KEYS, which=PARENTS)
def test_mutate_picks_a_kind_and_stays_in_bounds(seed, which):
  parent = TREES[which]
  child, description = operators.mutate(jax.random.key(seed), parent, SMALL)
  assert (child, description) == operators.mutate(jax.random.key(seed), parent, SMALL)
  assert description.split(":")[0] in operators.MUTATIONS
  _acceptable(child, [parent], SMALL)


def test_every_mutation_kind_applies_to_the_gpt_seed():
  gpt = seeds.seed("gpt")
  for name, op in operators.MUTATIONS.items():
    assert op(jax.random.key(0), gpt) is not None, name


def test_delete_and_swap_respect_slot_roles():
  only_norm = U("Sequence", [U("Residual", [U("Attention")]), U("RMSNorm")])
  for s in range(20):
    out = operators.mutate_delete(jax.random.key(s), only_norm)
    if out is not None:  # dropping the Residual would leave no mixer
      assert operators.violations(out[0]) == [] and out[0].size() < only_norm.size()
  same = U("Sequence", [U("Attention", n_heads=4), U("Attention", n_heads=4)])
  assert operators.mutate_swap(jax.random.key(0), same) is None
  parallel = U("Parallel", [U("Attention"), U("CausalConv")])
  assert operators.mutate_swap(jax.random.key(0), parallel) is None  # a reordered sum: same design


@settings(max_examples=40, deadline=None)
@given(seed=KEYS, a=PARENTS, b=PARENTS)
def test_exchange_child_holds_a_subtree_of_each_parent(seed, a, b):
  parents = [TREES[a], TREES[b]]
  out = operators.crossover_exchange(jax.random.key(seed), parents)
  assume(out is not None)
  child, description = out
  assert operators.crossover_exchange(jax.random.key(seed), parents) == out
  _acceptable(child, parents)
  receiver = int(description.split()[1])
  path, donor = _path(description), parents[1 - receiver]
  assert child.get(path) in [u for _, u in donor.walk()]
  assert child.replace(path, parents[receiver].get(path)) == parents[receiver]


@settings(max_examples=40, deadline=None)
@given(seed=KEYS, picks=st.lists(PARENTS, min_size=2, max_size=4))
def test_recombine_fills_each_root_slot_from_a_parent(seed, picks):
  parents = [TREES[i] for i in picks]
  out = operators.crossover_recombine(jax.random.key(seed), parents)
  assume(out is not None)
  child, _ = out
  assert operators.crossover_recombine(jax.random.key(seed), parents) == out
  _acceptable(child, parents)
  assert any(child.kind == p.kind and child.params == p.params for p in parents)
  donors = [[k for k, p in enumerate(parents) if len(p.children) > i and p.children[i] == c]
            for i, c in enumerate(child.children)]
  assert all(donors) and child not in parents


def test_crossover_of_different_parents_usually_succeeds():
  made = [operators.crossover(jax.random.key(s), [TREES[0], TREES[s % 4 + 7]]) for s in range(20)]
  assert sum(m is not None for m in made) >= 18
  assert {m[1].split(":")[0] for m in made if m} == set(operators.CROSSOVERS)


@settings(max_examples=30, deadline=None)
@given(seed=KEYS, depth=st.integers(3, 8), size=st.integers(4, 32))
def test_scratch_is_bounded_and_holds_a_sequence_mixer(seed, depth, size):
  bounds = Bounds(max_depth=depth, max_size=size)
  child, description = operators.scratch(jax.random.key(seed), bounds)
  assert operators.scratch(jax.random.key(seed), bounds) == (child, description)
  assert child.depth() <= depth and child.size() <= size
  assert any(registry.get(u.kind).role == registry.MIXER for _, u in child.walk())
  assert registry.get(child.kind).role == registry.BLOCK
  _acceptable(child, [], bounds)


def test_outputs_respect_tight_bounds():
  tight = Bounds(max_depth=5, max_size=10)
  gpt = seeds.seed("gpt")  # 9 units, depth 4
  for s in range(30):
    child, mode, _ = operators.propose(jax.random.key(s), [gpt, TREES[1]], n_verified=5, bounds=tight)
    assert child.size() <= 10 and child.depth() <= 5, (mode, child.render())


def test_choose_mode_follows_probabilities_and_renormalises():
  keys = [jax.random.key(s) for s in range(2000)]
  modes = Counter(operators.choose_mode(k, n_verified=5) for k in keys)
  for mode, p in operators.MODE_PROBS.items():
    assert abs(modes[mode] / len(keys) - p) < 0.03, modes
  early = Counter(operators.choose_mode(k, n_verified=1) for k in keys)
  assert early["crossover"] == 0 and abs(early["scratch"] / len(keys) - 0.05 / 0.8) < 0.03
  assert {operators.choose_mode(k, {"scratch": 0.0}, n_parents=1) for k in keys[:50]} == {"mutation"}
  with pytest.raises(ValueError, match="leave no mode"):
    operators.choose_mode(keys[0], {"scratch": 0.0, "mutation": 0.0}, n_verified=1)


def test_propose_is_deterministic_and_records_its_operator():
  parents = [TREES[2], TREES[8]]
  seen = Counter()
  for s in range(40):
    out = operators.propose(jax.random.key(s), parents, n_verified=4)
    assert out == operators.propose(jax.random.key(s), parents, n_verified=4)
    child, mode, description = out
    seen[mode] += 1
    _acceptable(child, parents)
    assert description.split(":")[0] in {"mutation": operators.MUTATIONS, "crossover": operators.CROSSOVERS,
                                         "scratch": ["scratch"]}[mode]
  assert seen["mutation"] > seen["crossover"] > 0
  child, mode, _ = operators.propose(jax.random.key(0), parents, n_verified=4, mode="scratch")
  assert mode == "scratch"


def test_bounds_from_config():
  import ml_collections
  assert Bounds.from_config(ml_collections.ConfigDict(dict(max_depth=8, max_size=12))) == Bounds(8, 12)


def test_violations_require_z_reads_to_follow_writes(z_kinds):
  ok = U("Sequence", [U("MemoWriter"), U("MemoReader")])
  assert operators.violations(ok) == []
  bad = U("Sequence", [U("MemoReader"), U("MemoWriter")])
  assert operators.violations(bad) == ["MemoReader at [0] reads Z ['memo'] before anything writes it"]
  for s in range(10):
    child, _ = operators.mutate(jax.random.key(s), ok)
    assert operators.violations(child) == []


def test_violations_name_each_problem():
  assert operators.violations(U("Sequence", [U("RMSNorm")])) == ["no sequence mixer"]
  deep = U("Attention")
  for _ in range(8):
    deep = U("Residual", [deep])
  assert operators.violations(deep, Bounds(8, 32)) == ["depth 9 > max_depth 8"]
  assert "outside its domain" in operators.violations(U("Attention", n_heads=3))[0]
