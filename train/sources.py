"""Where documents come from: `data.corpus` = kjv | files:GLOB | tfds:NAME[/CONFIG][:VERSION] | seqio:TASK.

A source yields `(split, payload)` items in a fixed order: `split` is None (the preparation
splits by document, `validation_mask`) or the split the source already assigned (KJV keeps its
own document split, `train.kjv.split_doc_ids`); `payload` is text, or token ids when the source
tokenises itself (seqio tasks). Only preparing a `tfds:` or `seqio:` corpus imports TFDS, seqio and
TensorFlow (`train/quiet_tf.py`); KJV, `files:` and the loader of prepared data never do. Nothing
is downloaded: a `tfds:` dataset must already be prepared under the TFDS data dir.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
from typing import Iterator

import numpy as np

from train import kjv, quiet_tf

KINDS = ("kjv", "files", "tfds", "seqio")
TEXT_DOCS = ("file", "blank_lines")
_BLOCK = 1 << 16  # documents per block of the split's random numbers


def validation_mask(indices: np.ndarray, seed: int, val_fraction: float) -> np.ndarray:
  """bool per global document index: in validation iff its uniform draw < val_fraction.

  The draw of document i is element i % 65536 of default_rng([seed, block i // 65536]), so the
  split is a pure function of (seed, index), computable while streaming any number of documents.
  """
  indices = np.asarray(indices, np.int64)
  out = np.zeros(indices.shape, bool)
  for block in np.unique(indices // _BLOCK):
    sel = indices // _BLOCK == block
    u = np.random.default_rng([int(seed), int(block)]).random(_BLOCK)
    out[sel] = u[indices[sel] % _BLOCK] < val_fraction
  return out


def _sha(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Files:
  """Plain text (one document per file, or per blank-line-separated block) and JSONL[.gz]."""

  def __init__(self, pattern: str, data_cfg):
    self.pattern = pattern
    self.text_docs = data_cfg.text_docs
    self.text_field = data_cfg.text_field
    if self.text_docs not in TEXT_DOCS:
      raise ValueError(f"data.text_docs {self.text_docs!r}: expected one of {list(TEXT_DOCS)}")

  def paths(self) -> list[str]:
    paths = sorted(p for p in glob.glob(os.path.expanduser(self.pattern), recursive=True)
                   if os.path.isfile(p))
    if not paths:
      raise FileNotFoundError(f"data.corpus files:{self.pattern} matches no files")
    return paths

  def describe(self) -> dict:
    return {"kind": "files", "pattern": self.pattern, "text_docs": self.text_docs,
            "text_field": self.text_field}

  def fingerprint(self) -> str:
    return _sha([(p, os.path.getsize(p), os.stat(p).st_mtime_ns) for p in self.paths()])

  def items(self) -> Iterator[tuple[None, str]]:
    for path in self.paths():
      if path.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
          for n, line in enumerate(f, 1):
            if not line.strip():
              continue
            try:
              text = json.loads(line)[self.text_field]
            except (ValueError, KeyError, TypeError):
              raise ValueError(f"{path}:{n}: expected a JSON object with a string "
                               f"{self.text_field!r} field") from None
            if text:
              yield None, str(text)
        continue
      with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
      if self.text_docs == "file":
        if text.strip():
          yield None, text
      else:
        for block in re.split(r"\n[ \t]*\n", text):
          if block.strip():
            yield None, block.strip("\n")


def tfds_data_dir(data_cfg) -> str:
  path = (data_cfg.tfds_data_dir or os.environ.get("TFDS_DATA_DIR")
          or "~/tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(path))


def _version_key(v: str):
  return tuple(int(x) if x.isdigit() else -1 for x in v.split("."))


class Tfds:
  """A TFDS dataset already prepared on disk, read with `builder_from_directory` (never a
  catalog builder, which would try to download)."""

  def __init__(self, spec: str, data_cfg):
    name, _, version = spec.partition(":")
    self.name, self.version = name.strip("/"), version
    self.split = data_cfg.source_split
    self.text_field = data_cfg.text_field
    self.root = tfds_data_dir(data_cfg)

  def directory(self) -> str:
    base = os.path.join(self.root, *self.name.split("/"))
    versions = [self.version] if self.version else sorted(
        (v for v in (os.listdir(base) if os.path.isdir(base) else [])
         if re.fullmatch(r"\d+\.\d+\.\d+", v)), key=_version_key, reverse=True)
    for v in versions:
      if os.path.isfile(os.path.join(base, v, "dataset_info.json")):
        return os.path.join(base, v)
    where = os.path.join(base, self.version or "<version>")
    raise FileNotFoundError(
        f"tfds:{self.name}{':' + self.version if self.version else ''} is not prepared: no "
        f"dataset_info.json in {where} (nothing is downloaded; prepare it there or set "
        "data.tfds_data_dir / $TFDS_DATA_DIR)")

  def describe(self) -> dict:
    return {"kind": "tfds", "name": self.name, "version": self.version, "split": self.split,
            "text_field": self.text_field, "root": self.root}

  def fingerprint(self) -> str:
    with open(os.path.join(self.directory(), "dataset_info.json"), "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()[:16]

  def items(self) -> Iterator[tuple[None, str]]:
    directory = self.directory()
    tfds = quiet_tf.tfds()
    builder = tfds.builder_from_directory(directory)
    if self.split not in builder.info.splits:
      raise ValueError(f"tfds:{self.name} has splits {sorted(builder.info.splits)}, not "
                       f"data.source_split {self.split!r}")
    ds = builder.as_dataset(split=self.split, shuffle_files=False)
    for ex in tfds.as_numpy(ds):
      if self.text_field not in ex:
        raise ValueError(f"tfds:{self.name} has no feature {self.text_field!r} "
                         f"(features: {sorted(ex)}); set data.text_field")
      text = ex[self.text_field]
      yield None, text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def import_modules(modules) -> None:
  """Imports each of `data.modules`: a module name, or the path of a .py file."""
  for m in modules or ():
    if m.endswith(".py"):
      path = os.path.abspath(os.path.expanduser(m))
      name = "genesys_user_" + hashlib.sha1(path.encode()).hexdigest()[:10]
      if name in sys.modules:
        continue
      spec = importlib.util.spec_from_file_location(name, path)
      if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"data.modules: {m!r} is not a Python file")
      module = importlib.util.module_from_spec(spec)
      sys.modules[name] = module
      spec.loader.exec_module(module)
    else:
      importlib.import_module(m)


def _module_fingerprint(modules) -> list:
  out = []
  for m in modules or ():
    path = m if m.endswith(".py") else getattr(importlib.util.find_spec(m), "origin", None) or m
    try:
      with open(os.path.expanduser(path), "rb") as f:
        out.append((m, hashlib.sha256(f.read()).hexdigest()[:16]))
    except OSError:
      out.append((m, None))
  return out


class Seqio:
  """A seqio Task (or Mixture) registered by one of `data.modules`; its tokens as they come."""

  def __init__(self, task: str, data_cfg):
    self.task = task
    self.modules = tuple(data_cfg.modules)
    self.split = data_cfg.source_split
    self.feature = data_cfg.seqio_feature
    if not self.modules:
      raise ValueError(f"data.corpus seqio:{task} needs data.modules naming the module that "
                       "registers the task")

  def describe(self) -> dict:
    return {"kind": "seqio", "task": self.task, "modules": list(self.modules),
            "split": self.split, "feature": self.feature}

  def fingerprint(self) -> str:
    return _sha(_module_fingerprint(self.modules))

  def _get(self):
    seqio = quiet_tf.seqio()
    import_modules(self.modules)
    try:
      return seqio.get_mixture_or_task(self.task)
    except ValueError:
      raise ValueError(f"seqio task {self.task!r} is not registered by data.modules "
                       f"{list(self.modules)}") from None

  def vocabulary(self):
    """The task's vocabulary as one of `train.vocab`'s."""
    from train import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    v = self._get().output_features[self.feature].vocabulary
    name = type(v).__name__
    if name == "ByteVocabulary":
      return vocab_lib.ByteVocabulary()
    if name == "SentencePieceVocabulary" and getattr(v, "sentencepiece_model_file", None):
      return vocab_lib.SentencePieceVocabulary(v.sentencepiece_model_file)
    raise ValueError(f"seqio task {self.task!r} uses a {name}: only byte and SentencePiece "
                     "vocabularies are supported")

  def items(self) -> Iterator[tuple[None, np.ndarray]]:
    ds = self._get().get_dataset(sequence_length=None, split=self.split, shuffle=False,
                                 num_epochs=1, use_cached=False)
    for ex in ds.as_numpy_iterator():
      yield None, np.asarray(ex[self.feature], np.int64)


class Kjv:
  """The embedded King James Bible, one document per chapter, split by document
  (`train.kjv.split_doc_ids`): the train documents, then the validation ones, each in book order.
  Tokenised by `train.vocab` (id-for-id seqio's), this is token for token what the former TFDS
  builder and seqio Task prepared, so shards prepared either way are the same files."""

  def __init__(self, data_cfg):
    self.data_cfg = data_cfg

  def describe(self) -> dict:
    return {"kind": "kjv"}

  def fingerprint(self) -> str:
    return _sha([os.path.getsize(kjv.kjv_path())])

  def items(self) -> Iterator[tuple[str, str]]:
    docs = kjv.corpus_documents("kjv")
    train_ids, val_ids = kjv.split_doc_ids(len(docs), self.data_cfg.split_seed,
                                           self.data_cfg.val_fraction)
    for split, ids in (("train", train_ids), ("validation", val_ids)):
      for i in ids:
        yield split, docs[i]


def make_source(data_cfg):
  """The source `data.corpus` names, or ValueError naming the accepted forms."""
  spec = str(data_cfg.corpus)
  kind, sep, rest = spec.partition(":")
  if spec == "kjv":
    return Kjv(data_cfg)
  if sep and rest and kind == "files":
    return Files(rest, data_cfg)
  if sep and rest and kind == "tfds":
    return Tfds(rest, data_cfg)
  if sep and rest and kind == "seqio":
    return Seqio(rest, data_cfg)
  raise ValueError(f"unknown corpus {spec!r}: expected one of 'kjv', 'files:GLOB', "
                   "'tfds:NAME[/CONFIG][:VERSION]' or 'seqio:TASK'")
