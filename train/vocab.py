"""Vocabularies without TensorFlow: bytes and SentencePiece, id-for-id equal to seqio's.

The training path (trainer, `train.train`, `train.bench`, a verifier) must run where TensorFlow,
seqio and TFDS are not installed, so it tokenises with these. `ByteVocabulary` gives the ids of
`seqio.ByteVocabulary` (0 pad, 1 EOS, 2 UNK, byte b -> b + 3; vocab_size 259) and
`SentencePieceVocabulary` those of `seqio.SentencePieceVocabulary` without extra ids (the model's
own pieces; EncodeAsIds / DecodeIds), so prepared data and stored results stay comparable with
data tokenised by seqio. `decode` stops after the first EOS, as seqio's does.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable

import numpy as np

VOCABS = ("byte", "spm")


class ByteVocabulary:
  """UTF-8 bytes shifted by the three specials (pad 0, EOS 1, UNK 2)."""
  kind = "byte"
  pad_id, eos_id, unk_id, bos_id = 0, 1, 2, None
  vocab_size = 259
  _NUM_SPECIAL = 3

  def encode(self, s: str | bytes) -> list[int]:
    return self.encode_np(s).tolist()

  def encode_np(self, s: str | bytes) -> np.ndarray:
    """int32 ids of `s`, vectorised (what preparation uses)."""
    raw = s if isinstance(s, bytes) else s.encode("utf-8")
    return np.frombuffer(raw, np.uint8).astype(np.int32) + self._NUM_SPECIAL

  def decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in _through_eos(ids, self.eos_id)]
    raw = bytes(i - 3 for i in ids if 3 <= i < self.vocab_size)
    return raw.decode("utf-8", errors="ignore")

  def fingerprint(self) -> str:
    return "byte"

  def __eq__(self, other):
    return isinstance(other, ByteVocabulary)

  def __hash__(self):
    return hash("byte")


class SentencePieceVocabulary:
  """A local SentencePiece model (`sentencepiece` package), no extra ids."""
  kind = "spm"
  bos_id = None

  def __init__(self, model_file: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.model_file = os.path.abspath(model_file)
    with open(self.model_file, "rb") as f:
      self.sp_model = f.read()
    self.tokenizer = spm.SentencePieceProcessor(model_proto=self.sp_model)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.GetPieceSize()

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id()

  @property
  def unk_id(self) -> int:
    return self.tokenizer.unk_id()

  @property
  def pad_id(self) -> int:
    return 0

  def encode(self, s: str) -> list[int]:
    return self.tokenizer.EncodeAsIds(s)

  def encode_np(self, s: str) -> np.ndarray:
    return np.asarray(self.tokenizer.EncodeAsIds(s), np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    size, unk = self.vocab_size, self.unk_id
    clean = [unk if int(i) >= size else int(i) for i in ids]
    return self.tokenizer.DecodeIds(_through_eos(clean, self.eos_id))

  def fingerprint(self) -> str:
    return "spm-" + hashlib.sha256(self.sp_model).hexdigest()[:16]

  def __eq__(self, other):
    return isinstance(other, SentencePieceVocabulary) and other.sp_model == self.sp_model

  def __hash__(self):
    return hash(self.sp_model)


def _through_eos(ids: Iterable[int], eos: int | None) -> list[int]:
  ids = list(ids)
  if eos is not None and eos in ids:
    ids = ids[:ids.index(eos) + 1]
  return ids


def spm_file(data_cfg) -> str:
  """The absolute path of `data.spm_model`, or FileNotFoundError naming the field."""
  path = os.path.abspath(os.path.expanduser(data_cfg.spm_model or ""))
  if not data_cfg.spm_model or not os.path.isfile(path):
    raise FileNotFoundError(f"data.spm_model {data_cfg.spm_model!r} is not a SentencePiece "
                            ".model file")
  return path


def make_vocabulary(data_cfg):
  """'byte' -> ByteVocabulary; 'spm' -> SentencePiece from data.spm_model."""
  if data_cfg.vocab == "byte":
    return ByteVocabulary()
  if data_cfg.vocab == "spm":
    return SentencePieceVocabulary(spm_file(data_cfg))
  raise ValueError(f"unknown vocab {data_cfg.vocab!r}: expected one of {list(VOCABS)}")


def token_bytes(vocab) -> np.ndarray:
  """int32 [vocab_size]: UTF-8 bytes each id stands for (0 for specials).

  Accepts these vocabularies and seqio's Byte/SentencePiece ones (by class name, so seqio need
  not be importable).
  """
  nbytes_V = np.zeros([vocab.vocab_size], np.int32)
  name = type(vocab).__name__
  if name == "ByteVocabulary":
    nbytes_V[3:3 + 256] = 1  # ids 0, 1, 2 are pad, eos, unk.
    return nbytes_V
  if name == "SentencePieceVocabulary":
    sp = vocab.tokenizer
    for i in range(min(sp.get_piece_size(), vocab.vocab_size)):
      if sp.is_control(i) or sp.is_unknown(i):
        continue
      if sp.is_byte(i):
        nbytes_V[i] = 1
      else:
        nbytes_V[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode())
    return nbytes_V
  raise TypeError(f"token_bytes: unsupported vocabulary {name}")


def token_dtype(vocab_size: int) -> np.dtype:
  """The smallest unsigned dtype that holds every id: uint16 up to 65536 ids, else uint32."""
  return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
