"""Corpora beyond KJV end to end: tfds: (prepared / not prepared), seqio: from a user module, the
SentencePiece tokenizer, training on a files: corpus, and the training path without TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_corpora import files_cfg, write_mixed_corpus
from gab import seeds
from train import data, sources, tokenizer, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO}/tests", "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  root = tmp_path_factory.mktemp("small")
  pattern = write_mixed_corpus(root / "text", 1_500_000, seed=1)
  cfg = files_cfg(root / "data", pattern)
  data.prepared(cfg)
  return root, cfg


def test_tfds_not_prepared_is_one_line(tmp_path):
  cmd = [sys.executable, "-m", "genesys_jax.cli.prepare", "--config=configs/ladder.py",
         "--config.data.corpus=tfds:c4/en:3.0.1", f"--config.data.tfds_data_dir={tmp_path}",
         f"--config.data.data_dir={tmp_path / 'd'}"]
  out = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and len(lines) == 1, out.stderr
  assert lines[0].startswith("error: tfds:c4/en:3.0.1 is not prepared") and str(tmp_path) in lines[0]


@pytest.mark.slow
def test_tfds_prepared_dataset_is_read_from_its_directory(tmp_path):
  from train import kjv, quiet_tf  # pylint: disable=g-import-not-at-top  (TFDS: preparation only)
  tfds = quiet_tf.tfds()
  docs = kjv.corpus_documents("kjv")
  train_ids, _ = kjv.split_doc_ids(len(docs), 0, 0.05)
  tfds.dataset_builders.store_as_tfds_dataset(
      name="kjv_chapters", version="1.0.0", config="seed0", data_dir=str(tmp_path / "tfds"),
      features=tfds.features.FeaturesDict({"text": tfds.features.Text()}), disable_shuffling=True,
      split_datasets={"train": [(int(i), {"text": docs[i]}) for i in train_ids]})
  cfg = files_cfg(tmp_path, "")
  cfg.corpus = "tfds:kjv_chapters/seed0"  # newest version found on disk
  cfg.tfds_data_dir = str(tmp_path / "tfds")
  directory, manifest = data.prepared(cfg)
  assert manifest["splits"]["train"]["docs"] + manifest["splits"]["validation"]["docs"] == 1130
  texts = [t for _, t in sources.make_source(cfg).items()]
  assert texts[0] == docs[int(train_ids[0])] and len(texts) == 1130


_TASK_MODULE = textwrap.dedent('''
  import functools
  import seqio
  import tensorflow as tf

  TEXTS = ["first document about seqio", "second one, \u00fcber bytes", "third"] * 20

  def _dataset(split, shuffle_files=False, seed=None):
    return tf.data.Dataset.from_tensor_slices({"text": TEXTS})

  seqio.TaskRegistry.add(
      "genesys_test_user_task",
      source=seqio.FunctionDataSource(_dataset, splits=("train",)),
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
          seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={"targets": seqio.Feature(seqio.ByteVocabulary(), add_eos=True)})
''')


def test_seqio_task_from_a_user_module(tmp_path):
  module = tmp_path / "my_tasks.py"
  module.write_text(_TASK_MODULE)
  cfg = files_cfg(tmp_path / "d", "")
  cfg.corpus = "seqio:genesys_test_user_task"
  cfg.modules = (str(module),)
  cfg.val_fraction = 0.2
  corpus = data.load_corpus(cfg)
  vocab = corpus.vocab
  stream = corpus.train.stream.read(0, len(corpus.train.stream))
  docs = vocab.decode(stream.tolist())
  assert docs in ("first document about seqio", "second one, \u00fcber bytes", "third")
  total = sum(corpus.info["docs"].values())
  assert total == 60 and (stream == 1).sum() == corpus.info["docs"]["train"]
  no_modules = files_cfg(tmp_path, "")
  no_modules.corpus = "seqio:genesys_test_user_task"
  with pytest.raises(ValueError, match="needs data.modules"):
    sources.make_source(no_modules)


def test_tokenizer_trains_and_round_trips(small, tmp_path):
  root, cfg = small
  out = tokenizer.train_tokenizer(cfg, 400, str(tmp_path / "tok.model"), max_bytes=400_000,
                                  threads=1)
  spm = data.SentencePieceVocabulary(out)
  assert spm.vocab_size == 400 and spm.eos_id == 1 and spm.unk_id == 2 and spm.pad_id == 0
  for text in ("In the beginning God created the heaven and the earth.",
               "über  naïve 東京 — tabs\tand  spaces 12345", "λόγος"):
    ids = spm.encode(text)
    assert spm.decode(ids) == text
  assert len(spm.encode("In the beginning God created")) < len("In the beginning God created")
  spm_cfg = files_cfg(tmp_path / "d", cfg.corpus.split(":", 1)[1], vocab="spm", spm_model=out)
  corpus = data.load_corpus(spm_cfg)
  assert corpus.vocab_size == 400 and corpus.bytes_per_token.sum() > 0


def _rung(batch, tokens):
  from configs.ladder import rung  # pylint: disable=g-import-not-at-top
  return rung(32, 1, 0, lr=3e-3, batch_size=batch, train_tokens=tokens, eval_batches=2)


def test_files_corpus_trains_end_to_end(small):
  _, cfg = small
  corpus = data.load_corpus(cfg)
  out, _ = trainer.train_and_evaluate(seeds.seed("gpt"), _rung(8, 8 * 64 * 12), corpus)
  assert out["train_loss"] < out["first_loss"] and np.isfinite(out["val_bpb"])
  assert 0 < out["epochs"] < 1


@pytest.mark.slow
def test_fifty_megabyte_files_corpus_trains_end_to_end(tmp_path):
  pattern = write_mixed_corpus(tmp_path / "text", 50_000_000, seed=2)
  cfg = files_cfg(tmp_path / "data", pattern, prepare_workers=2, seq_len=128)
  assert sum(os.path.getsize(tmp_path / "text" / f) for f in os.listdir(tmp_path / "text")) >= 5e7
  corpus = data.load_corpus(cfg)
  assert corpus.info["tokens"]["train"] > 30_000_000  # (.jsonl.gz files hold more than their size)
  out, _ = trainer.train_and_evaluate(seeds.seed("gpt"), _rung(16, 16 * 128 * 40), corpus)
  assert out["train_loss"] < out["first_loss"] and np.isfinite(out["val_bpb"])


_BLOCK = textwrap.dedent("""
  import importlib.abc, importlib.machinery, runpy, sys
  class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
      if name.split(".")[0] in ("tensorflow", "seqio", "tensorflow_datasets"):
        return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
      raise ImportError("blocked " + spec.name)
    def exec_module(self, module):
      pass
  sys.meta_path.insert(0, Block())
  module, sys.argv = sys.argv[1], sys.argv[1:]
  runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


def _run_blocked(*args):
  return subprocess.run([sys.executable, "-c", _BLOCK, *args], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("with_bench", [pytest.param(True, marks=pytest.mark.slow), False])
def test_training_path_runs_without_tensorflow(small, tmp_path, with_bench):
  """`genesys_jax.cli.train` on prepared shards (and, in the slow run, `genesys_jax.cli.bench`) where importing
  tensorflow, seqio or tensorflow_datasets raises, as on GPU images without them."""
  _, cfg = small
  if with_bench:
    bench = _run_blocked("genesys_jax.cli.bench", "--designs=gpt", "--shape=tiny", "--steps=1",
                         "--windows=1")
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert json.loads(bench.stdout.splitlines()[-1])["tokens_per_s"] > 0
  design = [p for p in seeds.write_seeds(str(tmp_path)) if p.endswith("gpt.json")][0]
  train = _run_blocked(
      "genesys_jax.cli.train", "--config=configs/ladder.py:smoke", f"--design={design}",
      f"--workdir={tmp_path / 'w'}", f"--config.data.corpus={cfg.corpus}",
      f"--config.data.data_dir={cfg.data_dir}", "--config.rungs.tiny.train_tokens=2000",
      "--config.rungs.tiny.eval_batches=1")
  assert train.returncode == 0, train.stderr[-2000:]
  metrics = json.loads(train.stdout.splitlines()[-1])
  assert np.isfinite(metrics["val_bpb"]) and metrics["steps"] >= 1
  assert "preparing" not in train.stderr  # read the shards prepared here, nothing else
