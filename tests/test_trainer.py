"""The trainer in-process: gradient accumulation, bf16 compute, TensorBoard events, schedules."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
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
  return config, rung, data.load_corpus(config.data)


def test_gradient_accumulation_matches_one_big_batch(setup):
  config, rung, corpus = setup
  one, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus)
  rung = rung.copy_and_resolve_references()
  rung.grad_accum = 4
  four, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus)
  assert one["steps"] == four["steps"] == 6
  for key in ("first_loss", "train_loss", "val_loss"):
    assert abs(one[key] - four[key]) < 1e-5, key


def test_bf16_compute_keeps_float32_parameters_and_writes_events(setup, tmp_path):
  config, rung, corpus = setup
  cfg = trainer.default_train_config()
  cfg.dtype = "bfloat16"
  out, state = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus,
                                          trainer.Run(train=cfg, log_dir=str(tmp_path)))
  assert np.isfinite(out["val_bpb"]) and out["train_loss"] < out["first_loss"]
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_schedule_warms_up_then_decays_to_the_minimum_ratio(setup):
  _, rung, _ = setup
  sched = trainer.make_schedule(rung, 100)  # warm-up: 2% of 100 steps
  assert float(sched(0)) == 0.0 and abs(float(sched(2)) - rung.lr) < 1e-9
  assert float(sched(50)) < rung.lr
  assert abs(float(sched(100)) - rung.lr * rung.min_lr_ratio) < 1e-9
