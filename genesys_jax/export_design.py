"""One design taken out of a run as a standalone package that needs only jax and flax.

`python -m genesys_jax.cli.export --workdir=DIR --design=ID [--rung=R] [--out=PKG_DIR]` writes
PKG_DIR (default DIR/export/design_ID), a Python package:

  model.py      the design's Flax model: `make_model()` (token embedding, n_blocks x the design's
                block, final RMSNorm, head tied to the embedding, at the exported rung's size),
                `load_params()` (the trained parameters, or None) and `loss()` (next-token NLL)
  __init__.py   re-exports model.py
  config.json   the unit tree, vocabulary, d_model, n_blocks, seq_len, dtype, rung and its metrics
  design.json   the design JSON as the run stored it (code units inline, for genesys_jax)
  params.npz    the parameters trained at that rung, from its last checkpoint (when there is one)
  code_units/   one module per code unit of the design, its source with `gab.units` imports made
                package-relative (the kind keeps its recorded name; nothing checks the hash here)
  _gab/         the unit library the block is built from: gab's tree, registry, units and model,
                copied with their imports made relative, so the logits are the project's own
  vocab.model   the SentencePiece model, for `data.vocab=spm` runs (bytes need none)

The rung is the highest one where the design has a result (`--rung` picks another); a design with
none is exported at the lowest rung's size without parameters. Nothing here runs a code unit: its
source is copied as text, and restoring the checkpoint reads arrays without building the model.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

GAB_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gab")
VENDORED = ("tree.py", "specs.py", "registry.py", "loss.py", "model.py", "units")  # what gab.model.LM needs, under gab/
LIBRARY = "_gab"


# -- imports made relative -----------------------------------------------------------------------
def _relative(package: list[str], target: list[str]) -> str:
  """The relative module name of `target` (parts under the export root) seen from `package`."""
  common = 0
  while common < min(len(package), len(target)) and package[common] == target[common]:
    common += 1
  return "." * (len(package) - common + 1) + ".".join(target[common:])


def _vendor_name(module: str) -> list[str] | None:
  """gab.x.y -> [_gab, x, y]; None for modules outside gab."""
  parts = module.split(".")
  return [LIBRARY, *parts[1:]] if parts[0] == "gab" else None


def relative_imports(source: str, package: list[str]) -> str:
  """`source` with every import of `gab...` rewritten relative to `package` (the file's package,
  as parts under the export root), each statement replaced in place (comments after it kept)."""
  lines = source.splitlines(keepends=True)
  module = ast.parse(source)
  uses_gab = any(isinstance(n, ast.Name) and n.id == "gab" for n in ast.walk(module))
  edits = []
  for node in ast.walk(module):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      target = _vendor_name(node.module)
      if target:
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        edits.append((node, f"from {_relative(package, target)} import {names}"))
    elif isinstance(node, ast.Import) and any(_vendor_name(a.name) for a in node.names):
      if len(node.names) != 1:
        raise ValueError(f"line {node.lineno}: import gab modules one per statement")
      (alias,) = node.names
      target = _vendor_name(alias.name)
      text = f"from {_relative(package, target[:-1])} import {target[-1]}"
      if alias.asname:  # import gab.units.norm as n
        text += f" as {alias.asname}"
      elif uses_gab:  # import gab.units.x, then gab.units.x.f(): bind `gab` to the copy
        text = f"from {_relative(package, [])} import {LIBRARY} as gab; {text}"
      edits.append((node, text))
  for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
    first, last = node.lineno - 1, node.end_lineno - 1
    head, tail = lines[first][:node.col_offset], lines[last][node.end_col_offset:]
    lines[first:last + 1] = [head + text + tail]
  return "".join(lines)


def _write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def _vendor_library(out: str) -> None:
  for entry in VENDORED:
    src = os.path.join(GAB_ROOT, entry)
    files = ([os.path.join(entry, f) for f in sorted(os.listdir(src)) if f.endswith(".py")]
             if os.path.isdir(src) else [entry])
    for rel in files:
      with open(os.path.join(GAB_ROOT, rel), encoding="utf-8") as f:
        text = f.read()
      package = [LIBRARY, *os.path.dirname(rel).split(os.sep)] if os.path.dirname(rel) else [LIBRARY]
      _write(os.path.join(out, LIBRARY, rel), relative_imports(text, package))
  _write(os.path.join(out, LIBRARY, "__init__.py"),
         '"""The unit library of genesys_jax (gab), copied with relative imports."""\n')


# -- what is exported ----------------------------------------------------------------------------
def trained_params(checkpoint_dir: str) -> dict[str, np.ndarray] | None:
  """The parameters of the newest checkpoint in `checkpoint_dir` as {"a/b/c": array}, read from the
  arrays on disk (the model is not built), or None if there is none. Nothing is written or deleted."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(checkpoint_dir):
    return None
  manager = ocp.CheckpointManager(checkpoint_dir, options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      return None
    restored = manager.restore(steps[-1], args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    state = restored["state"]
  finally:
    manager.close()
  flat = jax.tree_util.tree_flatten_with_path(state["params"])[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf) for path, leaf in flat}


def _choose_rung(config: dict, results: dict[str, dict], rung: str | None) -> str:
  rungs = list(config["ladder"]["rungs"])
  if rung is not None:
    if rung not in rungs:
      raise ValueError(f"--rung={rung}: this run's rungs are {', '.join(rungs)}")
    return rung
  done = [r for r in rungs if results.get(r, {}).get("val_bpb") is not None]
  return done[-1] if done else rungs[0]


def default_out(workdir: str, design_id: str) -> str:
  return os.path.join(workdir, "export", f"design_{design_id}")


def export(workdir: str, design_id: str, rung: str | None = None, out: str | None = None) -> str:
  """Writes the package of design `design_id` (see the module docstring); returns its directory."""
  from evolution.store import Store  # pylint: disable=g-import-not-at-top
  from gab import codeunits  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json, design_units  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(os.path.join(workdir, "evolution.db")) or not os.path.isfile(config_path):
    raise FileNotFoundError(f"{workdir} holds no evolution.db and config.json: expected a run's "
                            "workdir")
  with open(config_path) as f:
    config = json.load(f)
  with Store.open(workdir) as store:
    if not store.has_design(design_id):
      raise KeyError(f"no design {design_id!r} in {workdir}: expected an id from its leaderboard "
                     "or report")
    design = store.design(design_id)
    results = {v["rung"]: v["metrics"] for v in store.verifications(design_id)}
  rung = _choose_rung(config, results, rung)
  metrics = results.get(rung, {}) if results.get(rung, {}).get("val_bpb") is not None else {}
  tree, _ = design_from_json(design["tree"])  # declares code units (nothing runs)
  units = design_units(design["tree"])
  params = trained_params(os.path.join(workdir, "checkpoints", design_id, rung)) if metrics else None
  vocab = dict(config["data"]).get("vocab", "byte")
  if params is not None:
    vocab_size = int(params["params/embed/embedding"].shape[0])
  else:
    import ml_collections  # pylint: disable=g-import-not-at-top
    from train import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    vocab_size = vocab_lib.make_vocabulary(ml_collections.ConfigDict(config["data"])).vocab_size
  rung_cfg = config["rungs"][rung]
  spec = {
      "format": "genesys_jax.export/1", "design_id": design_id, "rung": rung,
      "tree": tree.to_dict(), "vocab": vocab, "vocab_size": vocab_size,
      "d_model": metrics.get("d_model", rung_cfg["d_model"]),
      "n_blocks": metrics.get("n_blocks", rung_cfg["n_blocks"]),
      "seq_len": config["data"]["seq_len"], "dtype": config.get("train", {}).get("dtype", "float32"),
      "trained": params is not None,
      "metrics": {k: v for k, v in metrics.items() if k != "loss_curve"},
      "code_units": {}}
  out = os.path.abspath(out or default_out(workdir, design_id))
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    _vendor_library(tmp)
    for kind, source in units.items():
      unit = codeunits.parse(source)
      module = f"{unit.name.lower()}_{unit.hash}"
      _write(os.path.join(tmp, "code_units", module + ".py"),
             relative_imports(source, ["code_units"]))
      spec["code_units"][kind] = {"module": module, "class": unit.class_name,
                                  "declaration": unit.declaration}
    if units:
      _write(os.path.join(tmp, "code_units", "__init__.py"), '"""This design\'s code units."""\n')
    if vocab == "spm":
      shutil.copyfile(config["data"]["spm_model"], os.path.join(tmp, "vocab.model"))
    if params is not None:
      np.savez(os.path.join(tmp, "params.npz"), **params)
    _write(os.path.join(tmp, "config.json"), json.dumps(spec, indent=1, sort_keys=True) + "\n")
    _write(os.path.join(tmp, "design.json"), design["tree"])
    _write(os.path.join(tmp, "model.py"), MODEL_PY.replace("DESIGN_ID", design_id))
    _write(os.path.join(tmp, "__init__.py"),
           f'"""Design {design_id}, exported by genesys_jax (see model.py)."""\n\n'
           "from .model import CONFIG, load_params, loss, make_model  # noqa: F401\n")
    if os.path.isdir(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


MODEL_PY = '''"""Design DESIGN_ID as a standalone Flax model: needs jax and flax, nothing of genesys_jax.

  import sys; sys.path.insert(0, "<the folder holding this package>")
  import design_DESIGN_ID as design
  model = design.make_model()                   # tokens [B, L] int32 -> float32 logits [B, L, V]
  params = design.load_params() or model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  logits = model.apply(params, tokens_BxL)
  nll = design.loss(model, params, tokens_BxL1)  # next-token NLL (nats/token): train it with optax

config.json: the unit tree, vocabulary (bytes: 0 pad, 1 EOS, 2 UNK, byte b -> b + 3; or vocab.model),
sizes, dtype and the rung's results. The block's units are built by _gab/ (genesys_jax's unit
library, copied) and code_units/ (this design's own units, whose Python runs when this imports).
"""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from ._gab import registry
from ._gab.model import LM
from ._gab.tree import Unit

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "config.json"), encoding="utf-8") as _f:
  CONFIG = json.load(_f)


def _register_code_units() -> None:
  for kind, entry in CONFIG["code_units"].items():
    if kind in registry.kinds():
      continue
    module = importlib.import_module(f"{__package__}.code_units.{entry['module']}")
    cls = getattr(module, entry["class"])
    d = entry["declaration"]
    registry.register(registry.KindSpec(
        kind, d["role"], cls,
        slots=tuple(registry.Slot(s["name"], tuple(s.get("roles", registry.ROLES)),
                                  s.get("min_count", 1), s.get("max_count", 1))
                    for s in d.get("slots", [])),
        params=tuple(registry.Param(n, p["default"], tuple(p["domain"]))
                     for n, p in sorted(d.get("params", {}).items())),
        reads=tuple(d.get("reads", [])), writes=tuple(d.get("writes", [])), doc=d.get("doc", "")))


_register_code_units()
TREE = Unit.from_dict(CONFIG["tree"])


def make_model(dtype=None, **overrides) -> LM:
  """The LM at the exported size; `overrides` (d_model=, n_blocks=, remat=, attention=) change it."""
  kw = dict(vocab_size=CONFIG["vocab_size"], d_model=CONFIG["d_model"], n_blocks=CONFIG["n_blocks"],
            dtype=jnp.dtype(dtype or CONFIG["dtype"]))
  return LM(TREE, **{**kw, **overrides})


def load_params():
  """The trained parameters ({"params": ...}, as model.init returns them), or None."""
  path = os.path.join(HERE, "params.npz")
  if not os.path.exists(path):
    return None
  params = {}
  with np.load(path) as arrays:
    for key in arrays.files:
      *parents, leaf = key.split("/")
      node = params
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = jnp.asarray(arrays[key])
  return params


def loss(model, params, tokens_BxL1):
  """Mean next-token negative log-likelihood (nats) of token rows [B, L + 1]."""
  logits_BxLxV = model.apply(params, tokens_BxL1[:, :-1])
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
  return -jnp.take_along_axis(logp_BxLxV, tokens_BxL1[:, 1:, None], axis=-1).mean()
'''
