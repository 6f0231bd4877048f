"""Canonical form and functional fingerprint: equivalent spellings of a design share an identity."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from evolution import operators
from evolution.canonical import _round_significant, canonical, canonical_id, fingerprint
from gab import registry, seeds
from gab.tree import Unit

U = Unit.make
GPT = seeds.seed("gpt")
ATTN, NORM, MLP, CONV = U("Attention"), U("RMSNorm"), U("GatedMLP"), U("CausalConv")
TREES = [GPT] + [operators.scratch(jax.random.key(i), operators.Bounds(6, 14))[0] for i in range(6)]


def _respell(rng: np.random.Generator, unit: Unit) -> Unit:
  """An equivalent spelling: Parallel branches shuffled, steps and units wrapped in Sequences."""
  kids = [_respell(rng, c) for c in unit.children]
  if unit.kind == "Parallel":
    kids = [kids[i] for i in rng.permutation(len(kids))]
  if unit.kind == "Sequence" and len(kids) >= 2 and rng.random() < 0.5:
    cut = int(rng.integers(1, len(kids)))
    kids = [U("Sequence", kids[:cut])] + kids[cut:]
  out = unit.with_children(kids)
  return U("Sequence", [out]) if rng.random() < 0.2 else out


def test_canonical_flattens_unwraps_and_orders():
  nested = U("Sequence", [U("Sequence", [NORM, ATTN]), U("Sequence", [MLP])])
  assert canonical(nested) == registry.normalize(U("Sequence", [NORM, ATTN, MLP]))
  assert canonical(U("Residual", [U("Sequence", [CONV])])) == registry.normalize(U("Residual", [CONV]))
  assert canonical_id(U("Parallel", [ATTN, CONV])) == canonical_id(U("Parallel", [CONV, ATTN]))
  assert canonical_id(U("Parallel", [ATTN, U("Parallel", [CONV, MLP])])) == \
      canonical_id(U("Parallel", [MLP, ATTN, CONV]))
  assert canonical_id(U("Gate", [ATTN, CONV])) != canonical_id(U("Gate", [CONV, ATTN]))
  assert canonical_id(U("Sequence", [NORM, ATTN])) != canonical_id(U("Sequence", [ATTN, NORM]))
  assert canonical_id(U("Attention")) == canonical_id(U("Attention", n_heads=4))  # the default
  assert canonical_id(U("Attention", n_heads=2)) != canonical_id(ATTN)
  assert len(canonical_id(GPT)) == 16


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), which=st.integers(0, len(TREES) - 1))
def test_canonical_id_ignores_respelling_and_canonical_is_idempotent(seed, which):
  tree = TREES[which]
  other = _respell(np.random.default_rng(seed), tree)
  assert canonical_id(other) == canonical_id(tree)
  assert canonical(canonical(other)) == canonical(other) == canonical(tree)


def test_parallel_branches_keep_their_order_when_z_links_them(z_kinds):
  linked = [U("MemoWriter"), U("MemoReader")]
  assert canonical_id(U("Parallel", linked)) != canonical_id(U("Parallel", linked[::-1]))
  free = [U("MemoWriter"), ATTN]
  assert canonical_id(U("Parallel", free)) == canonical_id(U("Parallel", free[::-1]))


def test_round_significant():
  x = np.array([123456.0, -0.00123456, 0.0, -0.0, np.inf, np.nan, 1.00004999])
  out = _round_significant(x, 4)
  np.testing.assert_array_equal(out[:5], [123500.0, -0.001235, 0.0, 0.0, np.inf])
  assert np.isnan(out[5]) and out[6] == 1.0 and not np.signbit(out[3])


def test_fingerprint_is_shared_by_equivalent_spellings_and_separates_designs():
  respelled = U("Sequence", [U("Sequence", [GPT.children[0]]), U("Sequence", [GPT.children[1]])])
  prints = [fingerprint(t, length=32) for t in (GPT, respelled, GPT.with_children(GPT.children[::-1]))]
  assert prints[0] == prints[1] == fingerprint(GPT, length=32) and prints[0] != prints[2]
  fewer_heads = GPT.replace((0, 0, 1), U("Attention", n_heads=2))
  assert fingerprint(fewer_heads, length=32) != prints[0]
