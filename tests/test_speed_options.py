"""No speed option changes a loss curve: the trainer against a plain training loop, step by step.

The plain loop is written here from the definitions: the full float32 logits, `log_softmax`,
`jax.grad` of the mean NLL, the trainer's optimiser, the trainer's batches and initial parameters.
The trainer runs with its speed options (the fused chunked cross-entropy, batches prefetched on a
thread, the rematerialisation chosen by memory) and must give the same loss at every step, to the
compute dtype's tolerance.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ladder_config
from gab import seeds
from gab.model import LM
from train import data, step_fit, trainer

STEPS = 6
TOLERANCE = {"float32": 2e-5, "bfloat16": 2e-2}  # relative, on the loss


@pytest.fixture(scope="module")
def setup():
  config = ladder_config("smoke")
  rung = config.rungs.tiny
  rung.train_tokens = STEPS * rung.batch_size * config.data.seq_len
  rung.eval_batches = 1
  return rung, data.load_corpus(config.data)


def plain_losses(rung, corpus, dtype: str, seed: int = 0) -> list[float]:
  model = LM(seeds.seed("gpt"), corpus.vocab_size, rung.d_model, rung.n_blocks, dtype=jnp.dtype(dtype))
  seq_len = corpus.train.shape[1] - 1
  params = model.init(jax.random.key(seed), jnp.zeros((1, seq_len), jnp.int32))
  optimizer = trainer.make_optimizer(rung, STEPS)
  opt_state = optimizer.init(params)
  batches = data.BatchIterator(corpus.train, rung.batch_size, seed=seed)

  def loss_fn(p, tokens_BxL1):
    logp_BxLxV = jax.nn.log_softmax(model.apply(p, tokens_BxL1[:, :-1]), axis=-1)
    return -jnp.take_along_axis(logp_BxLxV, tokens_BxL1[:, 1:, None], axis=-1).mean()

  @jax.jit
  def step(p, o, tokens_BxL1):
    loss, grads = jax.value_and_grad(loss_fn)(p, tokens_BxL1)
    updates, o = optimizer.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  losses = []
  for s in range(STEPS):
    params, opt_state, loss = step(params, opt_state, jnp.asarray(batches.batch_at(s)))
    losses.append(float(loss))
  return losses


def trainer_losses(rung, corpus, train_cfg) -> list[float]:
  out, _ = trainer.train_and_evaluate(seeds.seed("gpt"), rung, corpus, trainer.Run(train=train_cfg))
  assert out["steps"] == STEPS
  return [loss for _, loss in out["loss_curve"]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_trainer_loss_curve_is_the_plain_loops(setup, dtype):
  rung, corpus = setup
  cfg = trainer.default_train_config()
  cfg.dtype = dtype
  np.testing.assert_allclose(trainer_losses(rung, corpus, cfg), plain_losses(rung, corpus, dtype),
                             rtol=TOLERANCE[dtype])


@pytest.mark.slow  # ~10 compiles of the step
def test_auto_remat_fits_the_memory_limit_and_keeps_the_loss_curve(setup, caplog):
  rung, corpus = setup
  cfg = trainer.default_train_config()
  cfg.remat, cfg.remat_policy = True, "auto"
  model = LM(seeds.seed("gpt"), corpus.vocab_size, rung.d_model, rung.n_blocks)
  seq_len = corpus.train.shape[1] - 1
  opt = trainer.make_optimizer(rung, STEPS)

  def init_state(key):  # as the trainer makes it
    params = model.init(key, jnp.zeros((1, seq_len), jnp.int32))
    return trainer.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params), jax.random.key_data(key))
  state = jax.eval_shape(init_state, jax.random.key(0))
  tokens = jax.ShapeDtypeStruct((rung.batch_size, seq_len + 1), jnp.int32)
  plain_step = jax.jit(trainer.make_train_step(model, opt), donate_argnums=0).lower(state, tokens).compile()
  need = step_fit.step_bytes(plain_step)

  small = rung.copy_and_resolve_references()
  small.memory_limit_gb = 1e-6
  with pytest.raises(MemoryError, match="no rematerialisation fits.*none: .*full: "):
    trainer.train_and_evaluate(seeds.seed("gpt"), small, corpus, trainer.Run(train=cfg))

  tight = rung.copy_and_resolve_references()
  tight.memory_limit_gb = (need - 1) / step_fit.HEADROOM / 1e9  # no remat: just over the limit
  with caplog.at_level(logging.INFO, logger="absl"):
    losses = trainer_losses(tight, corpus, cfg)
  chosen = [r.getMessage() for r in caplog.records if "remat_policy=auto" in r.getMessage()]
  assert chosen and "'none'" not in chosen[-1], chosen
  np.testing.assert_allclose(losses, plain_losses(rung, corpus, "float32"), rtol=TOLERANCE["float32"])
