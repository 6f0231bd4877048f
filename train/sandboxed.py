"""Training a design with code units: traced in the sandbox, trained where none of its Python runs.

`train_design(...)` stages world-readable copies of what training reads and runs two jobs in
`gab/sandbox_child.py` children, each with the training limits:
  1. `trace_in_child`: registers the design's code units, sizes the design to the rung
     (`gab.sizing`) and exports its programs at that sizing (`gab.programs`: the init, and the block
     stack at the trained micro-batch and context length in the compute dtype, with its backward,
     remat and attention as configured); the only process that runs the design's code;
  2. `train_in_child`: loads those programs (refused if they can reach the host), declares the code
     units (no code runs) and trains the exported program with `train.trainer` (data read-only,
     checkpoint and log directories writable): the loss, the metrics, the evaluation and the
     post-training audit (`gab.audit`) are all computed by this process, which never ran a line of
     the design's Python, so nothing the design imports or patches can touch them.
It returns {"metrics", "sizing"}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from gab import sandbox
from train import data as data_lib

TRACE = "train.sandboxed:trace_in_child"   # the sandbox: register the code units, size, export
TRAIN = "train.sandboxed:train_in_child"   # the trusted child: train the exported programs


def train_design(design_json: str, rung, *, data_cfg, train_cfg, checker_cfg, seed: int,
                 checkpoint_dir: str | None = None, log_dir: str | None = None, zeroshot_cfg=None,
                 desc: str = "train", stop_after: int | None = None, fit: bool = True,
                 timeout_s: float = 24 * 3600) -> dict[str, Any]:
  """{"metrics", "sizing"} of training the design in the sandbox; raises SandboxError (a named
  reason) or DesignFailure (the design failed in training: diverged, out of memory, ...)."""
  stage = _stage_data(data_cfg, zeroshot_cfg)
  programs = tempfile.mkdtemp(prefix=f"gab-sandbox-{os.getpid()}-programs-")
  os.chmod(programs, 0o755)
  data, zs = stage["data"], stage["zeroshot"]
  checkpoint_dir, log_dir = [os.path.abspath(p) if p else None for p in (checkpoint_dir, log_dir)]
  binds = [(stage["dir"], False)]
  for path in (checkpoint_dir, log_dir):
    if path:
      os.makedirs(path, exist_ok=True)
      binds.append((path, True))
  job = dict(mode="call", design=design_json, rung=sandbox.as_dict(rung), data=data,
             train=sandbox.as_dict(train_cfg), checker=sandbox.as_dict(checker_cfg), zeroshot=zs,
             seed=seed, checkpoint_dir=checkpoint_dir, log_dir=log_dir, desc=desc,
             stop_after=stop_after, fit=fit, programs=programs)
  try:
    traced = sandbox.run_child(dict(job, call=TRACE), timeout_s=timeout_s, limits=sandbox.TRAIN_LIMITS,
                               binds=[(stage["dir"], False), (programs, True)])
    _raise_failure(traced)
    result = sandbox.run_child(dict(job, call=TRAIN, sizing=traced["result"]["sizing"]),
                               timeout_s=timeout_s, limits=sandbox.TRAIN_LIMITS,
                               binds=binds + [(programs, False)])
  finally:
    shutil.rmtree(stage["dir"], ignore_errors=True)
    shutil.rmtree(programs, ignore_errors=True)
  _raise_failure(result)
  return result["result"]


def _raise_failure(result: dict[str, Any]) -> None:
  if result.get("violations"):
    raise sandbox.DesignFailure(f"sandbox: host callback {', '.join(result['violations'])} refused")
  if "error" in result:
    raise sandbox.DesignFailure(result["error"])


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


def _configs(job: dict[str, Any]):
  import ml_collections  # pylint: disable=g-import-not-at-top
  cd = ml_collections.ConfigDict
  return cd(job["rung"]), cd(job["checker"]), cd(job["train"])


def _remat(train_cfg, rung):
  """The exported stack's rematerialisation: the policy configured; for "auto" (`train.step_fit`,
  which picks per compiled step) none where no memory limit is known (a CPU: what "auto" picks
  there), else "full", the one sure to fit."""
  from train import step_fit  # pylint: disable=g-import-not-at-top
  if not train_cfg.remat:
    return False
  policy = train_cfg.get("remat_policy", "full")
  if policy == "auto":
    return step_fit.AUTO_ORDER[0] if step_fit.memory_limit(rung) is None else "full"
  return policy


def program_specs(job: dict[str, Any], size: dict[str, Any]):
  """(init, stack) specs of the trained programs: the sized LM, the micro-batch the trainer steps
  (over all devices), the data's context length, the compute dtype."""
  from gab.programs import Spec  # pylint: disable=g-import-not-at-top
  rung, _, train_cfg = _configs(job)
  d, n = size.get("d_model") or rung.d_model, size.get("n_blocks") or rung.n_blocks
  seq_len = int(job["data"]["seq_len"])
  micro = max(1, rung.batch_size // int(rung.get("grad_accum", 1)))
  return (Spec("init", d, n, batch=1, length=seq_len),
          Spec("stack", d, n, train_cfg.dtype, micro, seq_len, vjp=True))


def trace_in_child(job: dict[str, Any]) -> dict[str, Any]:
  """The sandbox's side: register the code units, size the design, export its programs."""
  from gab import codeunits, programs, sizing  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json, design_units  # pylint: disable=g-import-not-at-top
  from train import vocab  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  tree, _ = design_from_json(job["design"])
  for source in design_units(job["design"]).values():
    codeunits.register(source)
  rung, cfg, train_cfg = _configs(job)
  vocab_size = vocab.make_vocabulary(ml_collections.ConfigDict(job["data"])).vocab_size
  size = sizing.fit_to_rung(tree, rung, cfg) if job.get("fit", True) else {}
  exported = programs.export(tree, vocab_size, program_specs(job, size),
                             remat=_remat(train_cfg, rung),
                             attention=train_cfg.get("attention", "auto"))
  if exported.facts["errors"]:
    key, error = sorted(exported.facts["errors"].items())[0]
    raise RuntimeError(f"tracing {key} failed: {error}")
  exported.save(job["programs"])
  return {"sizing": size}


def train_in_child(job: dict[str, Any]) -> dict[str, Any]:
  """The trusted side: train the exported programs (no code of the design's runs here)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from gab import codeunits, programs  # pylint: disable=g-import-not-at-top
  from gab.tree import design_from_json, design_units  # pylint: disable=g-import-not-at-top
  from train import trainer  # pylint: disable=g-import-not-at-top
  for source in design_units(job["design"]).values():
    codeunits.declare(source)
  tree, _ = design_from_json(job["design"])
  rung, _, train_cfg = _configs(job)
  cd = ml_collections.ConfigDict
  corpus = data_lib.load_corpus(cd(job["data"]))
  size = job["sizing"]
  init, stack = program_specs(job, size)
  model = programs.ExportedLM(programs.Programs.load(job["programs"]), stack, corpus.vocab_size,
                              init_spec=init)
  if job.get("fit", True) and rung.get("target_params"):  # the sizing was the sandbox's choice
    _, cfg, _ = _configs(job)
    n, target, tol = programs.count(model.param_shapes()), rung.target_params, cfg.size_tolerance
    if not target * (1 - tol) <= n <= target * (1 + tol):
      raise ValueError(f"SizeError: the traced program has {n:,} parameters, not within "
                       f"+-{tol:.0%} of the rung's {target:,}")
  metrics, _ = trainer.train_and_evaluate(tree, rung, corpus, trainer.Run(
      seed=job["seed"], train=train_cfg, zeroshot=cd(job["zeroshot"]) if job.get("zeroshot") else None,
      checkpoint_dir=job.get("checkpoint_dir"), log_dir=job.get("log_dir"),
      desc=job.get("desc", "train"), stop_after=job.get("stop_after")), model=model)
  return {"metrics": metrics, "sizing": size}
