"""Preparation into token shards and reading windows from them: files: corpora, parts, parallel
workers, kill + resume, memory while iterating a 2 GB shard."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from data_corpora import files_cfg, write_mixed_corpus
from train import data, prepare, shards, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  return root, write_mixed_corpus(root / "text", 2_000_000)


def _stream(cfg, split):
  directory, manifest = data.prepared(cfg)
  s = shards.TokenStream(directory, manifest, split)
  return s.read(0, len(s))


def test_files_corpus_documents_round_trip(corpus_dir, tmp_path):
  root, pattern = corpus_dir
  cfg = files_cfg(tmp_path, pattern)
  src = sources.make_source(cfg)
  docs = [t for _, t in src.items()]
  kinds = {os.path.splitext(p)[1] for p in src.paths()}
  assert {".txt", ".jsonl", ".gz"} <= kinds and len(docs) > 200
  directory, manifest = data.prepared(cfg)
  assert manifest["dtype"] == "uint16" and manifest["vocab"]["kind"] == "byte"
  val = sources.validation_mask(np.arange(len(docs)), cfg.split_seed, cfg.val_fraction)
  assert manifest["splits"]["validation"]["docs"] == int(val.sum()) > 0
  vocab = data.make_vocabulary(cfg)
  stream = _stream(cfg, "train")
  ends = np.concatenate([np.fromfile(os.path.join(directory, p["train"]["idx"]["file"]), np.int64)
                         + 0 for p in manifest["parts"]])
  train_docs = [d for d, v in zip(docs, val) if not v]
  assert len(ends) == len(train_docs)
  assert vocab.decode(stream[:ends[0]].tolist()) == train_docs[0]
  assert (stream == vocab.eos_id).sum() == len(train_docs)
  windows = data.load_split(cfg, "train")
  np.testing.assert_array_equal(windows[3], stream[3 * 65:4 * 65])
  blocks = files_cfg(tmp_path, pattern, text_docs="blank_lines")
  assert len(list(sources.make_source(blocks).items())) > len(docs)


def test_parts_and_workers_do_not_change_the_tokens(corpus_dir, tmp_path):
  root, pattern = corpus_dir
  one = files_cfg(tmp_path / "one", pattern)
  many = files_cfg(tmp_path / "many", pattern, prepare_workers=2)
  prepare.prepare(one)
  prepare.prepare(many, chunk_bytes=100_000, part_chunks=3)
  m_one, m_many = (data.prepared(c)[1] for c in (one, many))
  assert len(m_one["parts"]) == 1 and len(m_many["parts"]) > 3
  assert m_one["splits"] == m_many["splits"]
  for split in data.SPLITS:
    np.testing.assert_array_equal(_stream(one, split), _stream(many, split))
  w1, w2 = data.load_split(one, "train"), data.load_split(many, "train")
  rows = np.arange(len(w1))[::7]
  np.testing.assert_array_equal(w1[rows], w2[rows])  # windows across part boundaries too


_PREPARE = textwrap.dedent("""
  import sys
  from data_corpora import files_cfg
  from train import prepare
  prepare.prepare(files_cfg(sys.argv[1], sys.argv[2]), chunk_bytes=20_000, part_chunks=1)
""")


def test_killed_preparation_resumes_to_the_same_shards(corpus_dir, tmp_path):
  root, pattern = corpus_dir
  cfg = files_cfg(tmp_path / "killed", pattern)
  proc = subprocess.Popen([sys.executable, "-c", _PREPARE, cfg.data_dir, pattern], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO}/tests"})
  shard_root = os.path.join(cfg.data_dir, "shards")
  deadline = time.time() + 120
  while time.time() < deadline:
    parts = [p for d in (os.listdir(shard_root) if os.path.isdir(shard_root) else [])
             for p in os.listdir(os.path.join(shard_root, d)) if p.endswith(".json")]
    if len(parts) >= 3:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  directory = prepare.shards_dir(cfg, sources.make_source(cfg), data.make_vocabulary(cfg))
  assert not os.path.exists(os.path.join(directory, shards.MANIFEST))  # killed mid-way
  with pytest.raises(shards.CacheMismatch, match="is missing"):
    shards.read_manifest(directory)
  prepare.prepare(cfg, chunk_bytes=20_000, part_chunks=1)  # resumes after the committed parts
  clean = files_cfg(tmp_path / "clean", pattern)
  prepare.prepare(clean, chunk_bytes=20_000, part_chunks=1)
  resumed, fresh = shards.read_manifest(directory, full=True), data.prepared(clean)[1]
  assert [p["train"]["bin"]["sha256"] for p in resumed["parts"]] == [
      p["train"]["bin"]["sha256"] for p in fresh["parts"]]
  assert not [f for f in os.listdir(directory) if "tmp" in f]


def test_truncated_shard_is_rebuilt_with_one_notice(corpus_dir, tmp_path, capfd):
  root, pattern = corpus_dir
  cfg = files_cfg(tmp_path, pattern)
  before = _stream(cfg, "train")
  capfd.readouterr()
  directory, manifest = data.prepared(cfg)
  path = os.path.join(directory, manifest["parts"][0]["train"]["bin"]["file"])
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  after = _stream(cfg, "train")
  err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("data:")]
  assert len(err) >= 1 and path in err[0] and "rebuilding" in err[0]
  np.testing.assert_array_equal(before, after)
  # A source that changed is prepared again, too.
  with open(sorted(sources.make_source(cfg).paths())[0], "a") as f:
    f.write(" and more")
  data.prepared(cfg)
  assert "changed" in capfd.readouterr().err


def test_batches_are_a_function_of_seed_step_and_process(corpus_dir, tmp_path):
  root, pattern = corpus_dir
  cfg = files_cfg(tmp_path, pattern)
  windows = data.load_split(cfg, "train")
  it = data.BatchIterator(windows, 8, seed=5)
  run = [it.next() for _ in range(6)]
  resumed = data.BatchIterator(windows, 8, seed=5).restore({"step": 4})
  np.testing.assert_array_equal(resumed.next(), run[4])
  halves = [data.BatchIterator(windows, 8, seed=5, step=2, process_index=p, process_count=2)
            for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h.next() for h in halves]), run[2])
  assert abs(it.epochs_at(len(windows) // 16) - 0.5) < 0.01


_ITERATE = textwrap.dedent("""
  import sys
  import numpy as np
  from train import data
  windows = data.TokenWindows(data.shards.TokenStream(sys.argv[1], data.shards.read_manifest(
      sys.argv[1]), "train"), 2047)
  it = data.BatchIterator(windows, 64, seed=0, step=int(sys.argv[2]))
  for _ in range(int(sys.argv[3])):
    b = it.next()
    print(it.step, int(b.sum()), flush=True)
  peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
  print("peak_kb", peak, len(windows), flush=True)
""")


def _sparse_shard(directory, n_bytes):
  """A prepared directory whose train shard is a sparse file of n_bytes (zeros but one block)."""
  os.makedirs(directory, exist_ok=True)
  parts = []
  for split, size in (("train", n_bytes), ("validation", 4096)):
    path = os.path.join(directory, f"part-00000.{split}.bin")
    with open(path, "wb") as f:
      f.truncate(size)
      f.seek(size // 3)
      f.write(np.arange(4096, dtype=np.uint16).tobytes())
    np.asarray([size // 2], np.int64).tofile(os.path.join(directory, f"part-00000.{split}.idx"))
    parts.append((split, size))
  record = {"name": "part-00000", "items": [0, 2]}
  for split, size in parts:
    rec = {k: {"file": f"part-00000.{split}.{k}", "bytes": os.path.getsize(
        os.path.join(directory, f"part-00000.{split}.{k}")), "sha256": "-", "quick":
        shards.quick_hash(os.path.join(directory, f"part-00000.{split}.{k}"))}
        for k in ("bin", "idx")}
    record[split] = {"tokens": size // 2, "docs": 1, **rec}
  shards.write_json_atomic(os.path.join(directory, shards.MANIFEST), {
      "format": shards.FORMAT, "dtype": "uint16", "parts": [record], "corpus": "sparse",
      "splits": {}})


def _iterate(directory, step, n):
  out = subprocess.run([sys.executable, "-c", _ITERATE, directory, str(step), str(n)], cwd=REPO,
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO}/tests"})
  lines = out.stdout.split("\n")
  return [l for l in lines if l and not l.startswith("peak")], next(
      l for l in lines if l.startswith("peak"))


@pytest.mark.parametrize("gib,limit_mb", [pytest.param(2, 500, marks=pytest.mark.slow), (0.3, 200)])
def test_iterating_a_large_shard_keeps_memory_small(tmp_path, gib, limit_mb):
  """A whole epoch of random windows over a sparse shard: without releasing pages the resident
  set would grow past the shard's size (2 GiB; 0.3 GiB in the default run, limit 200 MB)."""
  directory = str(tmp_path / "sparse")
  _sparse_shard(directory, int(gib * (1 << 30)))
  n_windows = int(gib * (1 << 30)) // 2 // 2048
  steps = n_windows // 64 + 2  # a whole epoch and a bit: every page of the shard is read
  lines, peak = _iterate(directory, 0, steps)
  peak_kb = int(peak.split()[1])
  assert peak_kb < limit_mb * 1024, peak
  # killed and resumed (a fresh process from a later step) gives the same batches
  again, _ = _iterate(directory, steps - 5, 5)
  assert again == lines[-5:]
