"""Prepare a corpus once: `prepare(data_cfg)` (the command: `python -m genesys_jax.cli.prepare
--config=configs/ladder.py [--config.data.corpus=...]`).

Documents from the source (`train/sources.py`) are cut into chunks (~4 MiB of text, in source
order), tokenised in parallel by spawned worker processes (results are taken in chunk order, so
the output never depends on which worker finishes first), each followed by EOS, and written
into parts of 16 chunks (`train/shards.py` describes the files). A document goes to validation
by a seeded draw on its index (`sources.validation_mask`; KJV keeps its own document split).

Atomic and resumable: a part's files are written under temporary names, fsynced and renamed,
then its commit record; the manifest is written last. A killed preparation resumes after the
last committed part (whose files still match their records) and removes anything after it, so
no file ever looks complete that is not. One process prepares a directory at a time (a lock).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import glob
import itertools
import json
import multiprocessing
import os
import sys
from typing import Iterator

import numpy as np
from tqdm import tqdm

from train import shards, sources
from train import vocab as vocab_lib
from train.kjv import check_split_settings, resolve_data_dir

CHUNK_BYTES = 4 << 20   # text (or 4-byte tokens) per chunk sent to a worker
CHUNK_DOCS = 4096       # ... or at most this many documents
PART_CHUNKS = 16        # chunks per committed part


def cache_spec(data_cfg, source, vocab) -> dict:
  """Everything that decides the prepared tokens (not seq_len: windows are cut when reading)."""
  check_split_settings(data_cfg.split_seed, data_cfg.val_fraction)
  return {"format": shards.FORMAT, "source": source.describe(), "vocab": vocab.fingerprint(),
          "split_seed": int(data_cfg.split_seed), "val_fraction": float(data_cfg.val_fraction)}


def shards_dir(data_cfg, source, vocab) -> str:
  """DATA_DIR/shards/<corpus>-<vocab>-seed<S>-val<F>-<hash of the whole spec>."""
  spec = cache_spec(data_cfg, source, vocab)
  slug = "".join(c if c.isalnum() else "_" for c in str(data_cfg.corpus))[:40]
  name = (f"{slug}-{vocab.kind}-seed{spec['split_seed']}-val{spec['val_fraction']!r}-"
          f"{sources._sha(spec)[:10]}")  # pylint: disable=protected-access
  return os.path.join(resolve_data_dir(data_cfg), "shards", name)


# ---- workers -----------------------------------------------------------------------------------
_VOCAB = None


def _init_worker(vocab_spec) -> None:
  global _VOCAB
  kind, model_file = vocab_spec
  _VOCAB = (vocab_lib.ByteVocabulary() if kind == "byte"
            else vocab_lib.SentencePieceVocabulary(model_file))


def _vocab_spec(vocab) -> tuple[str, str | None]:
  return vocab.kind, getattr(vocab, "model_file", None)


def _tokenize_chunk(chunk: list[tuple[str, object]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (tokens, doc lengths)} of the chunk's documents, each ending in EOS, in order."""
  eos = _VOCAB.eos_id
  dtype = vocab_lib.token_dtype(_VOCAB.vocab_size)
  out = {}
  for split in shards.SPLITS:
    docs = []
    for s, payload in chunk:
      if s != split:
        continue
      ids = _VOCAB.encode_np(payload) if isinstance(payload, str) else np.asarray(payload)
      if not len(ids) or ids[-1] != eos:
        ids = np.append(ids, eos)
      docs.append(ids)
    tokens = np.concatenate(docs).astype(dtype) if docs else np.zeros([0], dtype)
    out[split] = (tokens, np.asarray([len(d) for d in docs], np.int64))
  return out


# ---- chunking and ordered parallel map ---------------------------------------------------------
def _chunks(items: Iterator, skip: int, data_cfg, chunk_bytes: int) -> Iterator[list]:
  """Chunks of (split, payload) after the first `skip` items; unsplit items get their split from
  their global index. Boundaries depend only on the items, so a resumed run cuts the same ones."""
  chunk, size, indices = [], 0, []
  for i, (split, payload) in enumerate(items):
    if i < skip:
      continue
    chunk.append([split, payload])
    indices.append(i)
    size += len(payload) * (1 if isinstance(payload, str) else 4)
    if size >= chunk_bytes or len(chunk) >= CHUNK_DOCS:
      yield _assign(chunk, indices, data_cfg)
      chunk, size, indices = [], 0, []
  if chunk:
    yield _assign(chunk, indices, data_cfg)


def _assign(chunk, indices, data_cfg) -> list:
  val = sources.validation_mask(np.asarray(indices), data_cfg.split_seed, data_cfg.val_fraction)
  return [(s if s is not None else ("validation" if v else "train"), p)
          for (s, p), v in zip(chunk, val)]


def _ordered_map(chunks: Iterator[list], vocab, workers: int) -> Iterator[tuple[int, dict]]:
  """(number of docs, tokenised chunk) in chunk order; at most 2 x workers chunks in flight."""
  first = next(chunks, None)
  second = next(chunks, None)
  if first is None:
    return
  head = [first] + ([second] if second is not None else [])
  pretokenised = not isinstance(first[0][1], str)  # nothing to parallelise but a copy
  if workers <= 1 or second is None or pretokenised:
    _init_worker(_vocab_spec(vocab))
    for c in itertools.chain(head, chunks):
      yield len(c), _tokenize_chunk(c)
    return
  ctx = multiprocessing.get_context("spawn")  # no forked TF/JAX state in the workers
  with _workers_skip_main():
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(_vocab_spec(vocab),))
  with pool:
    pending = collections.deque()
    for c in itertools.chain(head, chunks):
      pending.append((len(c), pool.apply_async(_tokenize_chunk, (c,))))
      if len(pending) >= 2 * workers:
        n, r = pending.popleft()
        yield n, r.get()
    while pending:
      n, r = pending.popleft()
      yield n, r.get()


@contextlib.contextmanager
def _workers_skip_main():
  """Spawned workers need only this module: hide `__main__` so they do not import the caller's
  script (which would run it again: slow, and a deadlock on the preparation lock)."""
  main = sys.modules["__main__"]
  saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
  main.__spec__ = None
  main.__dict__.pop("__file__", None)
  try:
    yield
  finally:
    main.__dict__.update(saved)


# ---- parts -------------------------------------------------------------------------------------
def _part_name(p: int) -> str:
  return f"part-{p:05d}"


class _PartWriter:
  """One part's train/validation files under temporary names until `commit`."""

  def __init__(self, directory: str, index: int, item_start: int):
    self.directory, self.index, self.item_start, self.items = directory, index, item_start, 0
    self.files, self.lengths = {}, {s: [] for s in shards.SPLITS}
    for split in shards.SPLITS:
      self.files[split] = open(self._path(split, "bin") + ".tmp", "wb")

  def _path(self, split: str, kind: str) -> str:
    return os.path.join(self.directory, f"{_part_name(self.index)}.{split}.{kind}")

  def add(self, n_items: int, result: dict) -> int:
    self.items += n_items
    for split, (tokens, lengths) in result.items():
      tokens.tofile(self.files[split])
      self.lengths[split].append(lengths)
    return sum(len(t) for t, _ in result.values())

  def commit(self) -> dict:
    record = {"name": _part_name(self.index), "items": [self.item_start,
                                                       self.item_start + self.items]}
    for split in shards.SPLITS:
      f = self.files[split]
      f.flush()
      os.fsync(f.fileno())
      f.close()
      lengths = np.concatenate(self.lengths[split]) if self.lengths[split] else np.zeros([0])
      ends = np.cumsum(lengths, dtype=np.int64)
      with open(self._path(split, "idx") + ".tmp", "wb") as g:
        ends.tofile(g)
        g.flush()
        os.fsync(g.fileno())
      for kind in ("bin", "idx"):
        os.replace(self._path(split, kind) + ".tmp", self._path(split, kind))
      record[split] = {"tokens": int(ends[-1]) if len(ends) else 0, "docs": int(len(ends)),
                       "bin": shards.file_record(self._path(split, "bin")),
                       "idx": shards.file_record(self._path(split, "idx"))}
    shards.write_json_atomic(os.path.join(self.directory, _part_name(self.index) + ".json"),
                             record)
    return record


def _committed_parts(directory: str, notice) -> list[dict]:
  """The longest prefix of parts whose records and files agree; everything else is removed."""
  parts = []
  while True:
    path = os.path.join(directory, _part_name(len(parts)) + ".json")
    try:
      with open(path) as f:
        record = json.load(f)
      for split in shards.SPLITS:
        for kind in ("bin", "idx"):
          shards.check_file(directory, record[split][kind])
    except FileNotFoundError:
      break
    except (shards.CacheMismatch, ValueError, KeyError) as e:
      notice(f"data: {e}; re-preparing from {_part_name(len(parts))}")
      break
    parts.append(record)
  keep = {os.path.join(directory, f"{r['name']}{ext}") for r in parts
          for ext in [".json"] + [f".{s}.{k}" for s in shards.SPLITS for k in ("bin", "idx")]}
  for path in glob.glob(os.path.join(directory, "part-*")) + glob.glob(
      os.path.join(directory, ".tmp-*")) + [os.path.join(directory, shards.MANIFEST)]:
    if path not in keep and os.path.exists(path):
      os.unlink(path)
  return parts


def _notice(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def prepare(data_cfg, *, workers: int | None = None, progress: bool | None = None,
            chunk_bytes: int = CHUNK_BYTES, part_chunks: int = PART_CHUNKS,
            fresh: bool = False, notice=None) -> str:
  """Prepares (or finishes preparing) the shards of `data_cfg`; returns their directory."""
  source = sources.make_source(data_cfg)
  vocab = vocab_lib.make_vocabulary(data_cfg)
  if isinstance(source, sources.Seqio) and source.vocabulary() != vocab:
    raise ValueError(f"seqio task {source.task!r} has another vocabulary than data.vocab "
                     f"{data_cfg.vocab!r} (set data.vocab / data.spm_model to the task's)")
  fingerprint = source.fingerprint()  # a source that is not there fails here, in one line
  directory = shards_dir(data_cfg, source, vocab)
  os.makedirs(directory, exist_ok=True)
  workers = workers or int(data_cfg.prepare_workers) or (os.cpu_count() or 1)
  with open(os.path.join(directory, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not fresh:
      try:
        shards.read_manifest(directory)
        return directory  # another process finished it while we waited
      except shards.CacheMismatch:
        pass
    if fresh:
      for path in glob.glob(os.path.join(directory, "part-*")):
        os.unlink(path)
    parts = _committed_parts(directory, notice or _notice)
    skip = parts[-1]["items"][1] if parts else 0
    chunks = _chunks(source.items(), skip, data_cfg, chunk_bytes)
    writer, in_part, tokens = None, 0, 0
    with tqdm(desc=f"prepare {data_cfg.corpus}", unit="doc", initial=skip, dynamic_ncols=True,
              disable=(not sys.stderr.isatty()) if progress is None else not progress,
              mininterval=1.0 if sys.stderr.isatty() else 10.0) as bar:
      for n, result in _ordered_map(chunks, vocab, workers):
        if writer is None:
          writer = _PartWriter(directory, len(parts), parts[-1]["items"][1] if parts else 0)
        tokens += writer.add(n, result)
        bar.update(n)
        bar.set_postfix(tokens=f"{tokens:,}")
        in_part += 1
        if in_part == part_chunks:
          parts.append(writer.commit())
          writer, in_part = None, 0
      if writer is not None:
        parts.append(writer.commit())
    return _write_manifest(directory, data_cfg, vocab, parts, fingerprint)


def _write_manifest(directory, data_cfg, vocab, parts, fingerprint) -> str:
  totals = {s: {"tokens": sum(p[s]["tokens"] for p in parts),
                "docs": sum(p[s]["docs"] for p in parts)} for s in shards.SPLITS}
  for split, t in totals.items():
    if t["docs"] == 0:
      raise ValueError(f"corpus {data_cfg.corpus!r} has no {split} document "
                       f"({totals['train']['docs'] + totals['validation']['docs']} documents, "
                       f"data.val_fraction={data_cfg.val_fraction}): add documents or change "
                       "data.val_fraction")
  manifest = {"format": shards.FORMAT, "spec": cache_spec(data_cfg, sources.make_source(data_cfg),
                                                         vocab),
              "corpus": str(data_cfg.corpus), "source_fingerprint": fingerprint,
              "vocab": {"kind": vocab.kind, "size": int(vocab.vocab_size),
                        "fingerprint": vocab.fingerprint()},
              "dtype": vocab_lib.token_dtype(vocab.vocab_size).name, "splits": totals,
              "parts": parts}
  shards.write_json_atomic(os.path.join(directory, shards.MANIFEST), manifest)
  return directory

