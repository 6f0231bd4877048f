import json
import subprocess
import sys

import jax
import pytest

from gab import registry, seeds
from gab.tree import DesignError, Unit, design_from_json, design_to_json

U = Unit.make


def test_json_round_trip_every_seed():
  for name in seeds.SEEDS:
    tree = seeds.seed(name)
    again, got_name = design_from_json(design_to_json(tree, name))
    assert again == tree and got_name == name
    assert again.content_hash() == tree.content_hash()
    assert Unit.from_dict(json.loads(json.dumps(tree.to_dict()))) == tree


def test_units_are_immutable_hashable_pytrees():
  tree = seeds.seed("gpt")
  with pytest.raises(Exception):
    tree.kind = "other"  # type: ignore[misc]
  assert {tree: 1}[seeds.seed("gpt")] == 1
  leaves = jax.tree.leaves(tree)
  assert 4 in leaves and "silu" in leaves
  doubled = jax.tree.map(lambda v: v * 2 if isinstance(v, int) and not isinstance(v, bool) else v, tree)
  assert registry.hparam(doubled.get((0, 0, 1)), "n_heads") == 8
  assert jax.tree.structure(doubled) == jax.tree.structure(tree)


def test_content_hash_identical_in_two_processes():
  code = "from gab import seeds; print(seeds.seed('gpt').content_hash())"
  outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout.strip()
          for s in (1, 2)}
  assert outs == {seeds.seed("gpt").content_hash()}


def test_paths_size_depth_and_rendering():
  tree = seeds.seed("gpt")
  assert tree.size() == 9 and tree.depth() == 4
  assert tree.get((0, 0, 1)).kind == "Attention"
  conv = registry.normalize(U("CausalConv"))
  swapped = tree.replace((0, 0, 1), conv)
  assert swapped.get((0, 0, 1)) == conv and tree.get((0, 0, 1)).kind == "Attention"
  assert swapped.content_hash() != tree.content_hash()
  assert tree.render().startswith("Sequence(Residual(Sequence(RMSNorm, Attention[n_heads=4]))")
  lines = tree.render_tree().splitlines()
  assert len(lines) == 9 and lines[4] == "      Attention[n_heads=4]"
  with pytest.raises(DesignError, match="no index 5"):
    tree.get((0, 5))


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"tree": {"kind": "Sequence", "children": [{"kind": 3}]}}', "missing string field 'kind'"),
    ('{"tree": {"kind": "RMSNorm", "color": 1}}', "unexpected fields"),
    ('[1, 2]', "expected an object with 'tree'"),
])
def test_malformed_design_json_names_the_problem(text, match):
  with pytest.raises(DesignError, match=match):
    design_from_json(text)


def test_type_errors_name_the_unit():
  bad_kind = U("Residual", [U("Transformerish")])
  assert "unknown unit kind 'Transformerish'" in registry.type_errors(bad_kind)[0][1]
  wrong_count = U("Gate", [U("RMSNorm")])
  assert "takes 2 children" in registry.type_errors(wrong_count)[0][1]
  bad_domain = U("Attention", n_heads=3)
  assert "n_heads=3 is outside its domain" in registry.type_errors(bad_domain)[0][1]
  assert registry.type_errors(seeds.seed("gpt")) == []


def test_wrong_role_in_slot_is_a_type_error():
  from gab.registry import CHANNEL, KindSpec, Slot
  from gab.units.combinators import Residual
  spec = KindSpec("ChannelOnlyResidual", registry.BLOCK, Residual, slots=(Slot("body", roles=(CHANNEL,)),))
  registry.register(spec)
  try:
    tree = U("ChannelOnlyResidual", [U("Attention")])
    (path, msg), = registry.type_errors(tree)
    assert path == (0,) and "is a sequence_mixer, but slot 'body'" in msg
  finally:
    registry._REGISTRY.pop("ChannelOnlyResidual")
