"""A verification resumed from its final checkpoint keeps its timing and its one TensorBoard run."""

import importlib.util
import os

import pytest

from gab import seeds
from train import data, trainer


@pytest.fixture(scope="module")
def setup():
  spec = importlib.util.spec_from_file_location("ladder", "configs/ladder.py")
  ladder = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ladder)
  config = ladder.get_config("smoke")
  rung = config.rungs.tiny
  rung.train_tokens = 6 * rung.batch_size * config.data.seq_len
  cfg = trainer.default_train_config()
  cfg.log_every = 2
  return rung, cfg, data.load_corpus(config.data)


def events(log_dir) -> dict[str, list[int]]:
  """{tag: steps} of the event files in `log_dir`."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
  acc.Reload()
  tags = acc.Tags()  # scalars as simple values or as tensors, whichever the writer uses
  out = {tag: [e.step for e in acc.Scalars(tag)] for tag in tags["scalars"]}
  out.update({tag: [e.step for e in acc.Tensors(tag)] for tag in tags["tensors"]})
  return out


def test_resuming_from_the_final_checkpoint_keeps_timing_and_one_event_file(setup, tmp_path):
  rung, cfg, corpus = setup
  run = trainer.Run(train=cfg, checkpoint_dir=str(tmp_path / "ckpt"), log_dir=str(tmp_path / "tb"))
  first, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus, run)
  again, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus, run)  # nothing left to train
  assert first["resumed_from_step"] == 0 and again["resumed_from_step"] == first["steps"] == 6
  assert first["train_wall_s"] > 0 and first["tokens_per_s"] > 0
  for key in ("train_wall_s", "tokens_per_s", "mfu", "val_bpb", "train_loss", "first_loss"):
    assert again[key] == first[key], key
  files = [n for n in os.listdir(tmp_path / "tb") if n.startswith("events.out.tfevents")]
  assert len(files) == 1, files
  tags = events(tmp_path / "tb")
  assert tags["train/loss"] == [2, 4, 6] and tags["val/bpb"] == [6]
