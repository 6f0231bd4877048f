"""A quiet start: the default (KJV) run never imports TensorFlow, TFDS or seqio, and prints only the
project's own lines; where a `tfds:`/`seqio:` corpus needs them, they are imported without their
C++ start-up lines (train/quiet_tf.py)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_FAMILY = ("tensorflow", "tensorflow_datasets", "seqio", "tensorflow_text", "tf_keras")

_DEFAULT_PATH = textwrap.dedent("""
  import json, sys
  import genesys_jax.launch, genesys_jax.loop, genesys_jax.score, genesys_jax.report.site
  from configs.ladder import get_config
  from gab import seeds
  from train import data, trainer
  config = get_config()
  corpus = data.load_corpus(config.data)  # prepares KJV into the empty data dir
  rung = get_config("smoke").rungs.tiny
  rung.train_tokens, rung.eval_batches = 2000, 1
  metrics, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus)
  print(json.dumps({"tokens": corpus.info["tokens"], "val_bpb": metrics["val_bpb"],
                    "tf": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (TF_FAMILY,))


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # a fresh shell's
  return {**env, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", **extra}


def test_default_kjv_data_and_training_import_no_tensorflow(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _DEFAULT_PATH], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env=_env(GENESYS_DATA_DIR=str(tmp_path)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.splitlines()[-1])
  assert out["tf"] == []
  assert out["tokens"] == {"train": 3942639, "validation": 194813} and out["val_bpb"] > 0
  # The preparation's notice is the only line on stderr: no TensorFlow, TFDS or JAX lines.
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("data: preparing kjv (byte) into "), lines


def test_tensorflow_for_tfds_and_seqio_corpora_starts_without_its_cxx_lines():
  code = ("from train import quiet_tf; quiet_tf.seqio(); import tensorflow as tf; "
          "print(len(tf.constant([1, 2])), len(tf.config.list_physical_devices('GPU')))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["2", "0"]  # TF works, and has no GPU to take from JAX
  assert proc.stderr == ""


def test_the_filter_keeps_what_is_not_tensorflows_start_up_noise(capfd):
  from train import quiet_tf  # pylint: disable=g-import-not-at-top
  with quiet_tf._filtered_stderr():  # pylint: disable=protected-access
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to "
                b"STDERR\nI0000 00:00:1796416601.059154   10569 port.cc:153] oneDNN custom "
                b"operations are on.\nTraceback: a real error\n")
  assert capfd.readouterr().err == "Traceback: a real error\n"


def test_a_check_prints_its_report_and_nothing_else(tmp_path):
  """No `Unable to initialize backend 'tpu'` line (absl's INFO default) per checked design."""
  design = tmp_path / "one_child_gate.json"  # fails the format check: quick, but JAX is started
  design.write_text('{"format": "genesys_jax.design/1", "name": "g", "tree": {"kind": "Gate", '
                    '"children": [{"kind": "MLP"}]}}')
  proc = subprocess.run([sys.executable, "-m", "genesys_jax.cli.check", f"--design={design}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())
  assert proc.returncode == 1 and '"passed": false' in proc.stdout
  assert proc.stderr == ""


@pytest.mark.slow
def test_preparing_a_tfds_corpus_prints_only_the_projects_lines(tmp_path):
  from train import kjv, quiet_tf  # pylint: disable=g-import-not-at-top
  tfds = quiet_tf.tfds()
  docs = kjv.corpus_documents("kjv")[:200]
  tfds.dataset_builders.store_as_tfds_dataset(
      name="chapters", version="1.0.0", data_dir=str(tmp_path / "tfds"),
      features=tfds.features.FeaturesDict({"text": tfds.features.Text()}), disable_shuffling=True,
      split_datasets={"train": list(enumerate({"text": d} for d in docs))})
  proc = subprocess.run(
      [sys.executable, "-m", "genesys_jax.cli.prepare", "--config=configs/ladder.py",
       "--config.data.corpus=tfds:chapters", f"--config.data.tfds_data_dir={tmp_path / 'tfds'}",
       f"--config.data.data_dir={tmp_path / 'data'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout)["splits"]["train"]["docs"] > 150
  # The progress bar (carriage returns) is the only output besides the JSON line.
  lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
  assert lines and all(line.startswith("prepare tfds:chapters: ") for line in lines), lines
