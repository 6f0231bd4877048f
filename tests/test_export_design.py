"""One design taken out of a run (`genesys_jax.cli.export --design`): the package loads and trains in
a fresh Python that cannot import the project, with the project's logits and the run's recorded
validation loss, code units included."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ladder_config
from evolution.store import Store
from gab import codeunits, seeds
from gab.model import LM
from gab.tree import Unit, design_to_json
from genesys_jax import export_design
from train import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in `python -I` (no PYTHONPATH, no user site) with the project's packages blocked outright: the
# package must work with jax and flax alone.
_STANDALONE = textwrap.dedent("""
  import json, sys
  class Block:
    def find_spec(self, name, path, target=None):
      if name.split(".")[0] in ("gab", "genesys_jax", "train", "evolution", "configs", "launch"):
        raise ImportError("the project is not installed here: " + name)
  sys.meta_path.insert(0, Block())
  sys.path.insert(0, sys.argv[1])
  import importlib
  import jax, jax.numpy as jnp, numpy as np, optax
  design = importlib.import_module(sys.argv[2])
  model = design.make_model()
  params = design.load_params()
  if params is None:  # the test's own initial parameters, flattened as params.npz is
    params = {}
    with np.load(sys.argv[4]) as arrays:
      for key in arrays.files:
        *up, leaf = key.split("/")
        node = params
        for p in up:
          node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(arrays[key])
  tokens = jnp.asarray(np.load(sys.argv[3]))
  np.save(sys.argv[5], np.asarray(model.apply(params, tokens[:, :-1])))
  opt = optax.adam(3e-3)
  state, losses = opt.init(params), []
  step = jax.jit(lambda p, s: (lambda l, g: (l, *opt.update(g, s, p)))(*jax.value_and_grad(
      lambda q: design.loss(model, q, tokens))(p)))
  for _ in range(4):
    loss, updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    losses.append(float(loss))
  print(json.dumps({"losses": losses, "config": design.CONFIG,
                    "project": sorted(m for m in sys.modules if m.split(".")[0] in ("gab", "train"))}))
""")


def _nest(flat):
  out = {}
  for key, value in flat.items():
    *up, leaf = key.split("/")
    node = out
    for p in up:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value)
  return out


def _standalone(package_dir, tokens, tmp_path, init_params=None):
  np.save(tmp_path / "tokens.npy", tokens)
  if init_params is not None:
    flat = jax.tree_util.tree_flatten_with_path(init_params)[0]
    np.savez(tmp_path / "init.npz", **{"/".join(k.key for k in path): np.asarray(v)
                                        for path, v in flat})
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  proc = subprocess.run(
      [sys.executable, "-I", "-c", _STANDALONE, os.path.dirname(package_dir),
       os.path.basename(package_dir), str(tmp_path / "tokens.npy"), str(tmp_path / "init.npz"),
       str(tmp_path / "logits.npy")],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1]), np.load(tmp_path / "logits.npy")


@pytest.mark.slow  # ~4 min: trains a run first (the code-unit export test is default)
def test_a_trained_design_exports_with_its_weights_and_reproduces_its_validation_loss(
    smoke_run, tmp_path):
  workdir, _, _ = smoke_run
  config = ladder_config("smoke")
  with Store.open(str(workdir)) as store:
    (found, metrics) = next((d, v["metrics"]) for d in store.designs() if d["operator"] != "seed"
                            for v in store.verifications(d["id"])
                            if v["rung"] == "small" and v["metrics"]["val_bpb"] is not None)
  out = tmp_path / "pkg" / f"design_{found['id']}"
  proc = subprocess.run([sys.executable, "-m", "genesys_jax.cli.export", f"--workdir={workdir}",
                         f"--design={found['id']}", f"--out={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0 and proc.stderr == "", proc.stderr
  assert str(out) in proc.stdout and (out / "params.npz").is_file()
  # The validation rows the run scored this design on at rung small.
  rung = config.rungs.small
  val = data.load_corpus(config.data).validation[:rung.eval_batches * rung.batch_size]
  result, logits = _standalone(str(out), np.asarray(val), tmp_path)
  assert result["project"] == []
  spec = result["config"]
  assert (spec["rung"], spec["d_model"], spec["n_blocks"]) == ("small", metrics["d_model"],
                                                                metrics["n_blocks"])
  assert result["losses"][0] == pytest.approx(metrics["val_loss"], rel=1e-5)
  assert result["losses"][-1] < result["losses"][0]  # it trains
  tree = Unit.from_dict(spec["tree"])
  params = _nest(dict(np.load(out / "params.npz")))
  project = LM(tree, spec["vocab_size"], spec["d_model"], spec["n_blocks"]).apply(
      params, jnp.asarray(val)[:, :-1])
  np.testing.assert_allclose(logits, np.asarray(project), rtol=1e-5, atol=1e-5)


def test_a_code_unit_design_exports_its_unit_as_a_module(tmp_path):
  with open(os.path.join(REPO, "tests", "code_units", "token_shift.py")) as f:
    source = f.read()
  kind = codeunits.register(source)  # this test process holds no secrets: the unit may run here
  mixer = Unit.make("Residual", [Unit.make("Sequence", [Unit.make("RMSNorm"), Unit.make(kind, mix=0.25)])])
  tree = Unit.make("Sequence", [mixer, seeds.seed("gpt").children[1]])
  workdir = tmp_path / "run"
  workdir.mkdir()
  config = ladder_config("smoke")
  (workdir / "config.json").write_text(config.to_json())
  with Store.open(str(workdir)) as store:
    store.add_design("c0de", design_to_json(tree, "shift", {kind: source}), [], "scratch",
                     "token shift", "valid")
  out = export_design.export(str(workdir), "c0de")
  assert out == str(workdir / "export" / "design_c0de")
  module = [f for f in os.listdir(os.path.join(out, "code_units")) if f.startswith("tokenshift_")]
  assert len(module) == 1 and not os.path.exists(os.path.join(out, "params.npz"))
  text = open(os.path.join(out, "code_units", module[0])).read()
  assert "from .._gab.units.base import UnitModule" in text and "gab.units.base" not in text.replace(
      "_gab.units.base", "")
  model = LM(tree, 259, config.rungs.tiny.d_model, config.rungs.tiny.n_blocks)
  tokens = np.arange(2 * 17, dtype=np.int32).reshape(2, 17) % 259
  with jax.numpy_rank_promotion("allow"):  # the unit broadcasts [D] against [B, L, D]
    params = model.init(jax.random.key(3), jnp.asarray(tokens[:, :-1]))
    project = model.apply(params, tokens[:, :-1])
  result, logits = _standalone(out, tokens, tmp_path, init_params=params)
  np.testing.assert_allclose(logits, np.asarray(project), rtol=1e-5, atol=1e-6)
  assert result["config"]["code_units"][kind]["class"] == "TokenShift"
  assert result["losses"][-1] < result["losses"][0]


def test_exporting_an_unknown_design_is_one_line(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(ladder_config("smoke").to_json())
  Store.open(str(workdir)).close()
  with pytest.raises(KeyError, match="no design 'nope'"):
    export_design.export(str(workdir), "nope")
  assert not (workdir / "export").exists() or not os.listdir(workdir / "export")
