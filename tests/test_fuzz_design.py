"""Fuzzing design files: every mutation of a valid design is accepted or refused in one line.

200 seeded mutations of the seeds' design JSON (truncations, type swaps, deep nesting, huge
numbers, unicode, bad bytes) go through the checker's loading and format stage in-process; each
must either pass or be refused with a one-line `DesignError` (or a failed format check), never
another exception. A handful go through `python -m genesys_jax.cli.check` and must end with exit 0, 1 or 2
and no traceback.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gab import checker, seeds
from gab.checks.context import Context
from gab.checks.structure import check_format
from gab.tree import DesignError, design_to_json, load_design

SEED_TEXTS = [design_to_json(seeds.seed(name), name) for name in sorted(seeds.SEEDS)]
ODD_VALUES = [None, True, -1, 0, 10**30, 10**400, -1e308, 1.5e-320, "", "x" * 300, "\u202e\U0001f600",
              "\ud800", [], {}, [[[]]], {"kind": "GPT"}, 3.5, "NaN"]


def _nodes(doc, out):
  """Every dict and list inside `doc` (the places a mutation can hit)."""
  if isinstance(doc, (dict, list)):
    out.append(doc)
    for v in (doc.values() if isinstance(doc, dict) else doc):
      _nodes(v, out)
  return out


def mutate(rng: np.random.Generator) -> bytes:
  """One random mutation of a seed's design file, as the bytes of a file."""
  text = SEED_TEXTS[rng.integers(len(SEED_TEXTS))]
  kind = rng.integers(9)
  if kind == 0:  # truncation
    return text.encode()[:rng.integers(len(text))]
  if kind == 1:  # deep nesting, as a unit tree or as a bare value
    depth = int(rng.choice([70, 500, 10_000, 100_000]))
    if rng.random() < 0.5:
      return ('{"kind": "Residual", "children": [' * depth + '{"kind": "MLP"}' + "]}" * depth).encode()
    return ("[" * depth + "]" * depth).encode()
  if kind == 2:  # huge numbers written as JSON text
    number = rng.choice(["1" * 5000, "1e999", "-1e999", "NaN", "Infinity", "1" * 400 + ".5", "-0"])
    return text.replace(": 4", f": {number}", 1).replace(": 1", f": {number}", 1).encode()
  if kind == 3:  # non-UTF-8 bytes or a BOM
    raw = bytearray(text.encode())
    for _ in range(rng.integers(1, 4)):
      raw.insert(rng.integers(len(raw)), int(rng.choice([0x80, 0xff, 0xc3, 0xfe])))
    return bytes(raw) if rng.random() < 0.8 else b"\xef\xbb\xbf" + text.encode()
  if kind == 4:  # random bytes flipped
    raw = bytearray(text.encode())
    for _ in range(rng.integers(1, 8)):
      raw[rng.integers(len(raw))] = rng.integers(256)
    return bytes(raw)
  doc = json.loads(text)
  nodes = [n for n in _nodes(doc, []) if n]
  node = nodes[rng.integers(len(nodes))]
  if kind == 5:  # type swap of a field
    if isinstance(node, dict):
      key = list(node)[rng.integers(len(node))]
      node[key] = ODD_VALUES[rng.integers(len(ODD_VALUES))]
    else:
      node[rng.integers(len(node))] = ODD_VALUES[rng.integers(len(ODD_VALUES))]
  elif kind == 6:  # unicode and odd keys
    if isinstance(node, dict):
      node[rng.choice(["children", "kind", "params", "\u00e9t\u00e9", "", "\x00"])] = (
          ODD_VALUES[rng.integers(len(ODD_VALUES))])
    if "tree" in doc and isinstance(doc["tree"], dict):
      doc["tree"]["kind"] = rng.choice(["\u0000", "GPT\u200b", "Résidual", "\U0001f600" * 50, "Residual"])
  elif kind == 7:  # hyperparameter names that collide with the API, or non-scalar values
    params = [n for n in _nodes(doc, []) if isinstance(n, dict) and "params" in n]
    target = params[rng.integers(len(params))]["params"] if params else doc
    target[str(rng.choice(["children", "kind", "self", "cls", "d_model", "n_heads"]))] = (
        ODD_VALUES[rng.integers(len(ODD_VALUES))])
  else:  # whole-document swaps
    doc = [doc, None, 7, "tree", {"format": "genesys_jax.design/999", "tree": doc.get("tree")},
           {"tree": doc}, {"format": ["x"], "tree": {}}][rng.integers(7)]
  return json.dumps(doc, ensure_ascii=bool(rng.random() < 0.5)).encode("utf-8", "surrogatepass")


def load_and_format(path: str) -> str:
  """'accepted' or the one-line refusal; anything else raising is a bug."""
  try:
    tree, _ = load_design(path)
  except DesignError as e:
    message = str(e)
    assert message and "\n" not in message, repr(message)
    return "refused: " + message
  assert len(tree.content_hash()) == 16
  ctx = Context(tree, checker.default_config(), checker.resolve_rung(None, checker.default_config()))
  result = check_format(ctx)
  assert "\n" not in result.message, repr(result.message)
  return "accepted" if result.status != checker.FAIL else "format failed: " + result.message


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
  rng = np.random.default_rng(20260615)
  root = tmp_path_factory.mktemp("mutants")
  paths = []
  for i in range(200):
    path = root / f"m{i:03d}.json"
    path.write_bytes(mutate(rng))
    paths.append(str(path))
  return paths


def test_200_mutated_designs_are_accepted_or_refused_in_one_line(mutants):
  outcomes = {path: load_and_format(path) for path in mutants}
  refused = [o for o in outcomes.values() if o.startswith("refused")]
  assert len(refused) > 50 and any(o == "accepted" for o in outcomes.values()), outcomes
  messages = " ".join(refused)
  for expected in ("not valid JSON", "not UTF-8", "nested", "finite"):
    assert expected in messages, expected


def test_design_file_limits(tmp_path):
  deep = tmp_path / "deep.json"
  deep.write_text('{"kind": "Residual", "children": [' * 10_000 + '{"kind": "MLP"}' + "]}" * 10_000)
  with pytest.raises(DesignError, match="nested too deeply"):
    load_design(str(deep))
  big = tmp_path / "big.json"
  with open(big, "wb") as f:
    f.truncate((16 << 20) + 1)
  with pytest.raises(DesignError, match="larger than the 16 MiB"):
    load_design(str(big))
  latin = tmp_path / "latin1.json"
  latin.write_bytes('{"kind": "Résidual"}'.encode("latin-1"))
  with pytest.raises(DesignError, match=r"not UTF-8 text \(byte 0xe9 at offset 11\)"):
    load_design(str(latin))
  for name, text in (("huge.json", '{"kind": "MLP", "params": {"hidden": ' + "9" * 5000 + "}}"),
                     ("inf.json", '{"kind": "MLP", "params": {"hidden": 1e999}}'),
                     ("api.json", '{"kind": "MLP", "params": {"children": 1, "kind": 2}}')):
    (tmp_path / name).write_text(text)
    if name == "api.json":  # names of Unit.make's own arguments are ordinary (unknown) names
      tree, _ = load_design(str(tmp_path / name))
      assert tree.hparams == {"children": 1, "kind": 2}
    else:
      with pytest.raises(DesignError):
        load_design(str(tmp_path / name))
  with pytest.raises(DesignError, match="cannot read design file"):
    load_design(str(tmp_path))


def test_a_handful_of_mutants_through_the_checker_cli(mutants, tmp_path):
  """Exit 0, 1 or 2, no traceback: a 10,000-deep file, a non-UTF-8 mutant, a format failure."""
  deep = tmp_path / "deep.json"
  deep.write_text("[" * 10_000 + "]" * 10_000)
  outcomes = {p: load_and_format(p) for p in mutants}
  latin = next(p for p, o in outcomes.items() if "not UTF-8" in o)
  unknown = next(p for p, o in outcomes.items() if "unknown unit kind" in o)
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  cases = ((str(deep), 2), (latin, 2), (unknown, 1))
  procs = [subprocess.Popen([sys.executable, "-m", "genesys_jax.cli.check", f"--design={path}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for path, _ in cases]  # at once: each is mostly start-up
  for (path, code), proc in zip(cases, procs):
    stdout, stderr = proc.communicate(timeout=600)
    run = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert run.returncode == code, (path, run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, (path, run.stderr[-2000:])
    if code == 2:
      errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
      assert len(errors) == 1 and path in errors[0], run.stderr
    else:
      assert json.loads(run.stdout)["checks"][0]["status"] == "fail"


@pytest.mark.slow
def test_more_mutants_through_the_checker_cli(mutants):
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  for path in mutants[:20]:
    run = subprocess.run([sys.executable, "-m", "genesys_jax.cli.check", f"--design={path}"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 1, 2) and "Traceback" not in run.stderr, (path, run.stderr[-2000:])
