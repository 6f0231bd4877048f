"""A design as exported programs (gab/programs.py): what is checked is what is trained, and a
program that can reach the host is refused where it would run."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export

from gab import programs, seeds
from gab.model import LM
from gab.programs import ExportedLM, Programs, ProgramError, Spec
from genesys_jax import resolve
from train import data, trainer

GPT = seeds.seed("gpt")
INIT = Spec("init", 64, 2, batch=1, length=32)
STACK = Spec("stack", 64, 2, "float32", 2, 32, vjp=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """The GPT seed's init and stack programs, saved and loaded back as a trusted process would."""
  directory = tmp_path_factory.mktemp("programs")
  programs.export(GPT, 259, [INIT, STACK]).save(str(directory))
  return Programs.load(str(directory))


def test_the_exported_lm_computes_what_the_lm_computes(saved):
  lm = LM(GPT, 259, 64, 2)
  exported = ExportedLM(saved, STACK, 259, init_spec=INIT)
  key = jax.random.key(3)
  params = exported.init(key)
  assert jax.tree.structure(params) == jax.tree.structure(lm.init(key, jnp.zeros((1, 32), jnp.int32)))
  tokens = np.random.default_rng(0).integers(3, 259, (5, 32)).astype(np.int32)
  want = np.asarray(jax.jit(lm.apply)(params, tokens))
  got = np.asarray(jax.jit(exported.apply)(params, tokens))  # 5 rows: three program batches
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  short = np.asarray(jax.jit(exported.apply)(params, tokens[:2, :20]))  # padded on the right
  np.testing.assert_allclose(short, got[:2, :20], rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda p: exported.apply(p, tokens[:2]).sum())(params)
  want_grads = jax.grad(lambda p: lm.apply(p, tokens[:2]).sum())(params)
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_training_the_exported_program_is_training_the_design(tmp_path):
  spec = importlib.util.spec_from_file_location("ladder", "configs/ladder.py")
  ladder = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ladder)
  config = resolve.resolve(ladder.get_config("smoke"))
  rung = config.rungs.tiny
  rung.train_tokens = 4 * rung.batch_size * config.data.seq_len
  corpus = data.load_corpus(config.data)
  length, d, n = config.data.seq_len, rung.d_model, rung.n_blocks
  specs = [Spec("init", d, n, batch=1, length=length),
           Spec("stack", d, n, "float32", rung.batch_size, length, vjp=True)]
  programs.export(GPT, corpus.vocab_size, specs).save(str(tmp_path))
  model = ExportedLM(Programs.load(str(tmp_path)), specs[1], corpus.vocab_size, init_spec=specs[0])
  direct, _ = trainer.train_and_evaluate(GPT, rung, corpus)
  exported, _ = trainer.train_and_evaluate(GPT, rung, corpus, model=model)
  for key in ("first_loss", "train_loss", "val_loss", "params", "steps"):
    assert abs(direct[key] - exported[key]) <= 1e-5 * abs(direct[key]), key
  assert direct["audit"] == exported["audit"] and not exported["audit"]["leaks"]


def _saved_program(tmp_path, fn, *args, disabled=()):
  exp = jax_export.export(jax.jit(fn), disabled_checks=disabled)(*args)
  Programs({STACK.key: exp}, {}).save(str(tmp_path))
  return str(tmp_path)


def test_loading_refuses_a_host_callback_whatever_the_program_claims(tmp_path):
  """A hostile sandbox can write any bytes: a custom call to the host-callback target, exported
  with jax's own safety check disabled, is refused on load."""
  target = "xla_ffi_python_cpu_callback"

  def callback(x):
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x.shape, x.dtype))(x)
  path = _saved_program(tmp_path, callback, jax.ShapeDtypeStruct((4,), jnp.float32),
                        disabled=[jax_export.DisabledSafetyCheck.custom_call(target)])
  with pytest.raises(ProgramError, match=f"host access custom_call {target} in program stack@"):
    Programs.load(path)


def test_loading_keeps_pure_kernels_and_refuses_a_malformed_index(tmp_path):
  path = _saved_program(tmp_path, lambda x: jnp.linalg.eigh(x @ x.T)[0],
                        jax.ShapeDtypeStruct((4, 4), jnp.float32))
  loaded = Programs.load(path)  # LAPACK's eigh is a custom call: a pure kernel, allowed
  assert loaded.get(STACK).out_avals[0].shape == (4,)
  (tmp_path / "facts.json").write_text('{"programs": {"x": "../../etc/passwd"}, "facts": {}}')
  with pytest.raises(ProgramError, match="malformed program index"):
    Programs.load(path)
