"""Training a design with code units in the sandbox (`gab.sandbox`): the parent's side and the child's.

`train_design(...)` stages world-readable copies of what training reads, runs one job in
`gab/sandbox_child.py` with the training limits (the data read-only, the checkpoint and log
directories writable) and returns {"metrics", "sizing"}; in the child, `run_in_child(job)` registers
the design's code units, sizes the design to the rung and trains it with `train.trainer`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from gab import sandbox
from train import data as data_lib

CALL = "train.sandboxed:run_in_child"  # what the sandbox's child runs for a training job


def train_design(design_json: str, rung, *, data_cfg, train_cfg, checker_cfg, seed: int,
                 checkpoint_dir: str | None = None, log_dir: str | None = None, zeroshot_cfg=None,
                 desc: str = "train", stop_after: int | None = None, fit: bool = True,
                 timeout_s: float = 24 * 3600) -> dict[str, Any]:
  """{"metrics", "sizing"} of training the design in the sandbox; raises SandboxError (a named
  reason) or DesignFailure (the design failed in training: diverged, out of memory, ...)."""
  stage = _stage_data(data_cfg, zeroshot_cfg)
  data, zs = stage["data"], stage["zeroshot"]
  binds = [(stage["dir"], False)]
  checkpoint_dir, log_dir = [os.path.abspath(p) if p else None for p in (checkpoint_dir, log_dir)]
  for path in (checkpoint_dir, log_dir):
    if path:
      os.makedirs(path, exist_ok=True)
      binds.append((path, True))
  job = dict(mode="call", call=CALL, design=design_json, rung=sandbox.as_dict(rung), data=data,
             train=sandbox.as_dict(train_cfg), checker=sandbox.as_dict(checker_cfg), zeroshot=zs,
             seed=seed, checkpoint_dir=checkpoint_dir, log_dir=log_dir, desc=desc,
             stop_after=stop_after, fit=fit)
  try:
    result = sandbox.run_child(job, timeout_s=timeout_s, limits=sandbox.TRAIN_LIMITS, binds=binds)
  finally:
    shutil.rmtree(stage["dir"], ignore_errors=True)
  if result.get("violations"):
    raise sandbox.DesignFailure(f"sandbox: host callback {', '.join(result['violations'])} refused")
  if "error" in result:
    raise sandbox.DesignFailure(result["error"])
  return result["result"]


def _stage_data(data_cfg, zeroshot_cfg) -> dict[str, Any]:
  """World-readable copies of what training reads (the prepared token shards, a SentencePiece model, the
  zero-shot task files) in a fresh directory, since the sandbox's uid may not read the cache."""
  stage = tempfile.mkdtemp(prefix=f"gab-sandbox-{os.getpid()}-data-")
  os.chmod(stage, 0o755)
  data = sandbox.as_dict(data_cfg)
  directory, _ = data_lib.prepared(data_cfg)  # the token shards, prepared here if need be
  rel = os.path.relpath(directory, data_lib.resolve_data_dir(data_cfg))
  _copy(directory, os.path.join(stage, rel))  # same place under the staged data_dir
  if data.get("vocab") == "spm":
    data["spm_model"] = _copy(os.path.expanduser(data["spm_model"]), os.path.join(stage, "spm.model"))
  data["data_dir"] = stage
  zs = sandbox.as_dict(zeroshot_cfg)
  if zs:
    zs["tasks"] = [_copy(os.path.abspath(t), os.path.join(stage, "zeroshot", f"{i}_{os.path.basename(t)}"))
                   for i, t in enumerate(zs["tasks"])]
  return {"dir": stage, "data": data, "zeroshot": zs}


def _copy(src: str, dst: str) -> str:
  os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
  if os.path.isdir(src):
    shutil.copytree(src, dst)
  else:
    shutil.copyfile(src, dst)
  for root, dirs, files in os.walk(dst) if os.path.isdir(dst) else [(os.path.dirname(dst), [], [os.path.basename(dst)])]:
    for d in dirs:
      os.chmod(os.path.join(root, d), 0o755)
    for f in files:
      os.chmod(os.path.join(root, f), 0o644)
  return dst


def run_in_child(job: dict[str, Any]) -> dict[str, Any]:
  """The child's side (after isolation): size the design and train it; {"metrics", "sizing"}."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from gab import codeunits, sizing  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json, design_units  # pylint: disable=g-import-not-at-top
  from train import trainer  # pylint: disable=g-import-not-at-top
  tree, _ = design_from_json(job["design"])
  for source in design_units(job["design"]).values():
    codeunits.register(source)
  cd = ml_collections.ConfigDict
  rung, cfg = cd(job["rung"]), cd(job["checker"])
  size = sizing.fit_to_rung(tree, rung, cfg) if job["fit"] else {}
  corpus = data_lib.load_corpus(cd(job["data"]))
  metrics, _ = trainer.train_and_evaluate(tree, sizing.sized(rung, size), corpus, trainer.Run(
      seed=job["seed"], train=cd(job["train"]), zeroshot=cd(job["zeroshot"]) if job["zeroshot"] else None,
      checkpoint_dir=job["checkpoint_dir"], log_dir=job["log_dir"], desc=job["desc"],
      stop_after=job["stop_after"]))
  return {"metrics": metrics, "sizing": size}
