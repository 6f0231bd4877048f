"""Units as code: parsing (AST only), the lint, declare/register, design JSON v2, GP operators."""

import glob
import json
import os

import jax
import pytest

from evolution import canonical, operators
from gab import codeunits, registry
from gab.tree import DesignError, Unit, design_from_json, design_to_json, design_units, load_design_file

U = Unit.make
HERE = os.path.dirname(os.path.abspath(__file__))
FILES = sorted(glob.glob(os.path.join(HERE, "code_units", "*.py")))


def read(name):
  with open(os.path.join(HERE, "code_units", name)) as f:
    return f.read()


@pytest.fixture
def forget():
  """Kinds a test adds are unregistered afterwards, so other tests see only the built-in kinds."""
  added = []
  yield added
  for kind in set(codeunits.known()) | set(added):
    codeunits.forget(kind)


def design(dc, ts, sq):
  return registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(dc)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(ts, mix=0.25)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(sq)])])]))


def test_parse_reads_the_declaration_without_running_anything():
  source = read("token_shift.py") + "\nraise SystemExit('executed!')\n"
  unit = codeunits.parse(source)
  assert unit.name == "TokenShift" and unit.class_name == "TokenShift"
  assert unit.kind == f"TokenShift@{codeunits.source_hash(source)}" and codeunits.is_code_kind(unit.kind)
  assert unit.declaration["role"] == "sequence_mixer"
  assert unit.declaration["params"]["mix"] == {"default": 0.5, "domain": [0.25, 0.5, 0.75]}
  assert unit.doc.startswith("TokenShift: mixes each position")
  assert not codeunits.is_code_kind("Attention")


@pytest.mark.parametrize("source, message", [
    ("x = (", "syntax error at line 1"),
    ("class A(UnitModule):\n  pass\n", "no module-level `KIND"),
    ("KIND = dict(name=f(), role='norm')\nclass A(UnitModule):\n  pass\n", "KIND at line 1 must be a literal"),
    ("KIND = dict(name='A', role='mixer')\nclass A(UnitModule):\n  pass\n", "role 'mixer' is not one of"),
    ("KIND = dict(name='A', role='norm')\n", "exactly one UnitModule subclass, found 0"),
    ("KIND = dict(name='A b', role='norm')\nclass A(UnitModule):\n  pass\n", "name must be an identifier"),
    ("KIND = dict(name='A', role='norm', params={'k': {'default': 5, 'domain': [1, 2]}})\n"
     "class A(UnitModule):\n  pass\n", "default 5 not in its domain"),
    ("KIND = dict(name='A', role='norm', color='red')\nclass A(UnitModule):\n  pass\n", "unknown fields"),
])
def test_parse_errors_are_one_line_and_name_the_problem(source, message):
  with pytest.raises(codeunits.CodeUnitError) as e:
    codeunits.parse(source)
  assert message in str(e.value) and "\n" not in str(e.value)
  assert isinstance(e.value, DesignError)


def test_the_fixtures_are_lint_clean():
  assert len(FILES) == 3
  for path in FILES:
    with open(path) as f:
      assert codeunits.lint(f.read()) == [], path


@pytest.mark.parametrize("snippet, message", [
    ("import os", "line 3: forbidden import os"),
    ("import time", "line 3: forbidden import time"),
    ("from subprocess import run", "line 3: forbidden import subprocess"),
    ("from jax import debug", "line 3: forbidden import debug from jax"),
    ("from .x import y", "line 3: forbidden import .x"),
    ("f = open('/etc/passwd')", "line 3: forbidden name open"),
    ("f = getattr(__builtins__, '__im' + 'port__')('os')", "line 3: forbidden name getattr"),
    ("f = eval('1')", "line 3: forbidden name eval"),
    ("f = jax.debug.callback", "line 3: forbidden attribute .debug"),
    ("f = jax.pure_callback", "line 3: forbidden attribute .pure_callback"),
    ("f = jnp.zeros.__globals__", "line 3: forbidden attribute .__globals__"),
    ("f = np.load('x.npy')", "line 3: forbidden attribute .load"),
    ("print('side effect at import')", "line 3: only imports, assignments"),
])
def test_lint_names_the_line_of_each_forbidden_construct(snippet, message):
  source = f"import jax\nimport jax.numpy as jnp\n{snippet}\nimport numpy as np\n"
  problems = codeunits.lint(source)
  assert any(p.startswith(message) for p in problems), problems


def test_declare_types_and_gp_without_executing_code(forget):
  source = read("decay_conv.py").replace("import flax.linen as nn", "import flax.linen as nn\nBOOM = 1 / 0")
  kind = codeunits.declare(source)
  assert registry.get(kind).role == registry.MIXER
  tree = registry.check_types(U("Residual", [U(kind)]))
  assert tree.children[0].hparams == {"kernel_size": 4}
  assert canonical.canonical_id(tree)  # canonical forms work on the declaration alone
  with pytest.raises(DesignError, match="declared only"):
    from gab.units.base import build  # pylint: disable=g-import-not-at-top
    build(tree.children[0])
  assert codeunits.declare(source) == kind  # idempotent


def test_register_executes_with_restricted_builtins(forget):
  kind = codeunits.register(read("token_shift.py"))
  assert codeunits.is_executable(kind) and codeunits.register(read("token_shift.py")) == kind
  bad = read("token_shift.py").replace("import jax.numpy as jnp", "import jax.numpy as jnp\nimport os")
  with pytest.raises(codeunits.CodeUnitError, match="forbidden import os"):
    codeunits.register(bad)
  sneaky = read("token_shift.py").replace(  # the lint cannot see into strings; the runtime refuses
      "class TokenShift", "import typing\ndef f(a: \"__import__('os')\"): pass\nOS = typing.get_type_hints(f)\nclass TokenShift")
  assert codeunits.lint(sneaky) == []
  with pytest.raises(codeunits.CodeUnitError, match="forbidden import os"):
    codeunits.register(sneaky)


def test_design_json_v2_round_trip_and_v1_unchanged(forget):
  kinds = [codeunits.declare(read(n)) for n in ("decay_conv.py", "token_shift.py", "sqrelu_gate.py")]
  tree = design(*kinds)
  text = design_to_json(tree, "coded", codeunits.sources_for(tree))
  doc = json.loads(text)
  assert doc["format"] == "genesys_jax.design/2" and sorted(doc["units"]) == sorted(kinds)
  for kind in kinds:
    codeunits.forget(kind)
  back, name = design_from_json(text)  # declares the embedded units again
  assert back == tree and name == "coded" and all(k in registry.kinds() for k in kinds)
  assert design_units(text) == doc["units"]
  gpt = U("Residual", [U("RMSNorm")])
  assert json.loads(design_to_json(gpt, "g")) == {"format": "genesys_jax.design/1", "name": "g",
                                                  "tree": gpt.to_dict()}


def test_an_edited_embedded_source_is_refused_with_one_line(forget, tmp_path):
  kind = codeunits.declare(read("sqrelu_gate.py"))
  tree = registry.normalize(U("Residual", [U(kind)]))
  doc = json.loads(design_to_json(tree, None, codeunits.sources_for(tree)))
  doc["units"][kind] = doc["units"][kind].replace("jax.nn.sigmoid", "jax.nn.relu")
  path = tmp_path / "edited.json"
  path.write_text(json.dumps(doc))
  with pytest.raises(DesignError) as e:
    load_design_file(str(path))
  assert "edited after hashing" in str(e.value) and "\n" not in str(e.value)


def test_gp_operators_draw_registered_code_kinds(forget):
  kinds = [codeunits.declare(read(n)) for n in ("decay_conv.py", "token_shift.py", "sqrelu_gate.py")]
  from gab import seeds  # pylint: disable=g-import-not-at-top
  gpt = seeds.seed("gpt")
  used = set()
  for i in range(60):
    child, _ = operators.mutate(jax.random.key(i), gpt)
    used |= set(codeunits.kinds_in(child))
    assert registry.type_errors(child) == []
  assert used == set(kinds), used  # replace/insert draw code kinds as they draw built-in ones


def test_load_files_declares_hand_written_units(forget, tmp_path):
  kinds = codeunits.load_files([os.path.join(HERE, "code_units", "*.py")])
  assert [k.split("@")[0] for k in kinds] == ["DecayConv", "SqReluGate", "TokenShift"]
  with pytest.raises(DesignError, match="matches no file"):
    codeunits.load_files([str(tmp_path / "none*.py")])
  (tmp_path / "bad.py").write_text(read("token_shift.py").replace("import flax", "import os\nimport flax"))
  with pytest.raises(codeunits.CodeUnitError, match="bad.py: line 6: forbidden import os"):
    codeunits.load_files([str(tmp_path / "bad.py")])


def test_store_keeps_code_units_and_migrates_a_v2_store(tmp_path):
  import sqlite3  # pylint: disable=g-import-not-at-top
  from evolution import store as store_lib  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "evolution.db")
  db = sqlite3.connect(path)
  for steps in store_lib.MIGRATIONS[:2]:
    for sql in steps:
      db.execute(sql)
  db.execute("PRAGMA user_version = 2")
  db.commit()
  db.close()
  unit = codeunits.parse(read("token_shift.py"))
  with store_lib.Store(path) as store:
    assert store.version() == 4
    assert store.add_code_unit(unit.kind, unit.source, unit.declaration, None)
    assert not store.add_code_unit(unit.kind, unit.source, unit.declaration, "other")
    (row,) = store.code_units()
    assert row == {"kind": unit.kind, "name": "TokenShift", "hash": unit.hash, "source": unit.source,
                   "declaration": unit.declaration, "design_id": None, "seq": 0}


def test_a_v2_design_round_trips_in_a_fresh_process(forget, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  kinds = [codeunits.declare(read(n)) for n in ("decay_conv.py", "token_shift.py", "sqrelu_gate.py")]
  tree = design(*kinds)
  path = tmp_path / "coded.json"
  path.write_text(design_to_json(tree, "coded", codeunits.sources_for(tree)))
  code = ("import sys; from gab import codeunits, registry; from gab.tree import load_design_file, "
          "design_to_json; t, n, u = load_design_file(sys.argv[1]); "
          "print(design_to_json(t, n, codeunits.sources_for(t)), registry.get(codeunits.kinds_in(t)[0]).role)")
  proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == path.read_text() + " sequence_mixer"
