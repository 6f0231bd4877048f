"""Memory-mapped token shards: the on-disk form of a prepared corpus, and windows read from it.

A prepared corpus is a directory (written by `train.prepare`):

  part-00000.train.bin        tokens of the train documents of part 0, each document + EOS,
  part-00000.train.idx        int64 end offset of each document in that .bin
  part-00000.validation.bin   ... the same for validation
  part-00000.json             the part's commit record (written last, atomically)
  manifest.json               the whole corpus: source, vocabulary, split, token counts, every
                              file's size and sha256 (written when every part is committed)

Tokens are uint16 (vocabularies of up to 65536 ids) or uint32. A split's token stream is the
concatenation of its parts in order, and window r of length seq_len + 1 is tokens
[r (L+1), (r+1)(L+1)) of that stream: the same non-overlapping packing as before shards existed.
Nothing here imports TensorFlow, seqio or TFDS.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os

import numpy as np

from gab import atomic

FORMAT = "genesys_jax.shards/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
_QUICK = 1 << 16           # bytes hashed at each end of a file for the quick check
_DROP_EVERY = 64 << 20     # bytes mapped in before the maps' pages are released
_FAULT_AROUND = 64 << 10   # a page fault maps this much around it (Linux fault_around_bytes)


class CacheMismatch(Exception):
  """A prepared directory that is missing, incomplete, or does not match its manifest."""


def quick_hash(path: str) -> str:
  """sha256 of (size, first 64 KiB, last 64 KiB): cheap enough to check on every open."""
  size = os.path.getsize(path)
  h = hashlib.sha256(str(size).encode())
  with open(path, "rb") as f:
    h.update(f.read(_QUICK))
    if size > _QUICK:
      f.seek(max(_QUICK, size - _QUICK))
      h.update(f.read(_QUICK))
  return h.hexdigest()


def full_hash(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def file_record(path: str) -> dict:
  """What the manifest keeps of one file: name, size, full and quick sha256."""
  return {"file": os.path.basename(path), "bytes": os.path.getsize(path),
          "sha256": full_hash(path), "quick": quick_hash(path)}


def check_file(directory: str, record: dict, full: bool = False) -> None:
  """Raises CacheMismatch naming the file when it is missing, of another size or content."""
  path = os.path.join(directory, record["file"])
  if not os.path.isfile(path):
    raise CacheMismatch(f"{path} is missing")
  size = os.path.getsize(path)
  if size != record["bytes"]:
    raise CacheMismatch(f"{path} has {size} bytes, the manifest says {record['bytes']}")
  if quick_hash(path) != record["quick"] or (full and full_hash(path) != record["sha256"]):
    raise CacheMismatch(f"{path} does not match its sha256 in the manifest")


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON atomically (`gab.atomic`)."""
  atomic.write(path, json.dumps(obj, indent=1, sort_keys=True))


def read_manifest(directory: str, full: bool = False) -> dict:
  """The manifest of a complete prepared directory, every file checked (size and quick hash;
  with `full`, the whole sha256). CacheMismatch says what is wrong."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    raise CacheMismatch(f"{path} is missing (not prepared, or preparation did not finish)")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise CacheMismatch(f"{path} is unreadable: {e}") from None
  if manifest.get("format") != FORMAT:
    raise CacheMismatch(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
  for part in manifest["parts"]:
    for split in SPLITS:
      for kind in ("bin", "idx"):
        check_file(directory, part[split][kind], full)
  return manifest


class TokenStream:
  """One split's token stream across parts, memory-mapped; reads are copies (int32).

  Pages of the maps are released (`madvise(MADV_DONTNEED)`) after every 64 MiB mapped in
  (counting the 64 KiB a page fault maps around each window), so a process iterating a corpus
  of any size keeps only a small part of it resident.
  """

  def __init__(self, directory: str, manifest: dict, split: str):
    self.dtype = np.dtype(manifest["dtype"])
    self._maps, lengths = [], []
    for part in manifest["parts"]:
      n = int(part[split]["tokens"])
      if n:
        path = os.path.join(directory, part[split]["bin"]["file"])
        self._maps.append(np.memmap(path, self.dtype, "r", shape=(n,)))
        lengths.append(n)
    self.starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    self.num_tokens = int(self.starts[-1])
    self._read = 0

  def __len__(self) -> int:
    return self.num_tokens

  def _account(self, nbytes: int) -> None:
    self._read += nbytes
    if self._read >= _DROP_EVERY:
      self._read = 0
      for m in self._maps:
        if hasattr(mmap, "MADV_DONTNEED") and isinstance(getattr(m, "_mmap", None), mmap.mmap):
          m._mmap.madvise(mmap.MADV_DONTNEED)  # pylint: disable=protected-access

  def read(self, start: int, n: int) -> np.ndarray:
    """int32 tokens [start, start + n), possibly across parts."""
    if start < 0 or start + n > self.num_tokens:
      raise IndexError(f"tokens [{start}, {start + n}) outside a stream of {self.num_tokens}")
    out, pos = [], start
    while pos < start + n:
      i = int(np.searchsorted(self.starts, pos, side="right")) - 1
      lo = pos - int(self.starts[i])
      take = min(start + n - pos, int(self.starts[i + 1]) - pos)
      out.append(self._maps[i][lo:lo + take])
      pos += take
    self._account(max(n * self.dtype.itemsize, _FAULT_AROUND))
    return np.concatenate(out).astype(np.int32) if len(out) > 1 else out[0].astype(np.int32)

  def gather(self, starts_B: np.ndarray, n: int) -> np.ndarray:
    """int32 [B, n]: row b is tokens [starts_B[b], starts_B[b] + n); vectorised within a part."""
    starts_B = np.asarray(starts_B, np.int64)
    out_BxN = np.empty([len(starts_B), n], np.int32)
    part_B = np.searchsorted(self.starts, starts_B, side="right") - 1
    inside_B = starts_B + n <= self.starts[np.minimum(part_B + 1, len(self.starts) - 1)]
    for i in np.unique(part_B[inside_B]):
      rows = np.nonzero(inside_B & (part_B == i))[0]
      offsets_RxN = (starts_B[rows] - self.starts[i])[:, None] + np.arange(n)
      out_BxN[rows] = self._maps[i][offsets_RxN]
    for b in np.nonzero(~inside_B)[0]:
      out_BxN[b] = self.read(int(starts_B[b]), n)
    self._account(int(inside_B.sum()) * max(n * self.dtype.itemsize, _FAULT_AROUND))
    return out_BxN


class TokenWindows:
  """Non-overlapping windows of `seq_len + 1` tokens over a TokenStream, indexed like the int32
  [N, seq_len + 1] array the data pipeline used to keep in memory (`len`, `.shape`, rows by int,
  slice or integer array)."""

  def __init__(self, stream: TokenStream, seq_len: int):
    self.stream = stream
    self.row_len = int(seq_len) + 1
    self.num_rows = len(stream) // self.row_len
    self.shape = (self.num_rows, self.row_len)
    self.dtype = np.dtype(np.int32)
    self.ndim = 2

  def __len__(self) -> int:
    return self.num_rows

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      r = int(index) + (self.num_rows if index < 0 else 0)
      if not 0 <= r < self.num_rows:
        raise IndexError(f"window {index} outside {self.num_rows}")
      return self.stream.read(r * self.row_len, self.row_len)
    if isinstance(index, slice):
      index = np.arange(*index.indices(self.num_rows))
    rows = np.asarray(index, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
      raise IndexError(f"windows outside {self.num_rows}")
    return self.stream.gather(rows.reshape(-1) * self.row_len, self.row_len).reshape(
        rows.shape + (self.row_len,))

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)
