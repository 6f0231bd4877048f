"""The hand-written reference GPT is the GPT seed's model exactly; `train.bench` prints its JSON lines."""

import collections
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gab import seeds
from gab.model import LM, count_params
from train import bench, trainer
from train.reference_gpt import ReferenceGPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, D, N_BLOCKS, L = 259, 64, 2, 16

# Tree LM leaf (under blocks_i/root) -> reference leaf (under blocks_i).
_BLOCK_MAP = {
    ("0_Residual", "0_Sequence", "0_RMSNorm", "scale"): ("attn_norm",),
    ("0_Residual", "0_Sequence", "1_Attention", "qkv", "kernel"): ("qkv", "kernel"),
    ("0_Residual", "0_Sequence", "1_Attention", "out", "kernel"): ("out", "kernel"),
    ("1_Residual", "0_Sequence", "0_RMSNorm", "scale"): ("mlp_norm",),
    ("1_Residual", "0_Sequence", "1_GatedMLP", "gate_up", "kernel"): ("gate_up", "kernel"),
    ("1_Residual", "0_Sequence", "1_GatedMLP", "down", "kernel"): ("down", "kernel"),
}


def _leaves(params):
  return {tuple(k.key for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def tree_to_reference(tree_params):
  """The reference's parameter dict holding the tree LM's parameters, each mapped exactly once."""
  out = {}
  for path, value in _leaves(tree_params).items():
    assert path[0] == "params", path
    if path[1].startswith("blocks_"):
      assert path[2] == "root", path
      key = (path[1],) + _BLOCK_MAP[path[3:]]
    else:
      key = path[1:]  # embed/embedding, final_norm
    assert key not in out, key
    out[key] = value
  nested = {}
  for key, value in out.items():
    node = nested
    for part in key[:-1]:
      node = node.setdefault(part, {})
    node[key[-1]] = value
  return {"params": nested}


@pytest.fixture(scope="module")
def models():
  tree = seeds.seed("gpt")
  tokens = jax.random.randint(jax.random.key(1), (2, L), 0, VOCAB)
  lm = LM(tree, VOCAB, D, N_BLOCKS)
  ref = ReferenceGPT(VOCAB, D, N_BLOCKS)
  return lm, ref, tokens, lm.init(jax.random.key(0), tokens), ref.init(jax.random.key(0), tokens)


def test_same_parameter_shapes_and_count(models):
  _, _, _, lm_params, ref_params = models
  assert count_params(lm_params) == count_params(ref_params)
  mapped = tree_to_reference(lm_params)
  assert jax.tree.structure(mapped) == jax.tree.structure(ref_params)
  assert jax.tree.map(jnp.shape, mapped) == jax.tree.map(jnp.shape, ref_params)


def test_same_init_scheme(models):
  """Each parameter is drawn from the same distribution: equal std (ones for norm scales)."""
  _, _, _, lm_params, ref_params = models
  ref_leaves = _leaves(ref_params)
  for key, value in _leaves(tree_to_reference(lm_params)).items():
    np.testing.assert_allclose(np.std(value), np.std(ref_leaves[key]), rtol=0.1, atol=1e-7, err_msg=str(key))
    np.testing.assert_allclose(np.mean(value), np.mean(ref_leaves[key]), atol=2e-3, err_msg=str(key))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_equal_logits_under_mapped_parameters(models, dtype):
  lm, ref, tokens, lm_params, _ = models
  lm, ref = lm.clone(dtype=dtype), ref.clone(dtype=dtype)
  got = ref.apply(tree_to_reference(lm_params), tokens)
  want = lm.apply(lm_params, tokens)
  assert got.dtype == want.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _compiled_step(model, tokens_BxL1):
  opt = bench.bench_optimizer(10)

  def init_state(key):
    params = model.init(key, jnp.zeros((1, tokens_BxL1.shape[1] - 1), jnp.int32))
    return trainer.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params), jax.random.key_data(key))
  state = jax.eval_shape(init_state, jax.random.key(0))
  return jax.jit(trainer.make_train_step(model, opt), donate_argnums=0).lower(state, tokens_BxL1).compile()


def test_the_tree_compiles_to_the_hand_written_program():
  """The tree costs nothing: XLA's optimised train step of the GPT seed from its tree has the
  reference's operations (up to bitcasts, free reinterpretations), FLOPs and bytes accessed."""
  tokens = jax.ShapeDtypeStruct((2, L + 1), jnp.int32)
  tree_step = _compiled_step(LM(seeds.seed("gpt"), VOCAB, 32, 1, dtype=jnp.bfloat16), tokens)
  ref_step = _compiled_step(ReferenceGPT(VOCAB, 32, 1, dtype=jnp.bfloat16), tokens)

  def ops(compiled):
    found = re.findall(r"= [^=]*? ([a-z][a-z0-9\-]*)\(", compiled.as_text())
    return collections.Counter(op for op in found if op != "bitcast")
  assert ops(tree_step) == ops(ref_step)
  costs = [c[0] if isinstance(c, (list, tuple)) else c
           for c in (tree_step.cost_analysis(), ref_step.cost_analysis())]
  assert costs[0]["flops"] == costs[1]["flops"]
  assert costs[0]["bytes accessed"] == pytest.approx(costs[1]["bytes accessed"], rel=1e-4)


def test_bench_cli_prints_json_lines():
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
      [sys.executable, "-m", "genesys_jax.cli.bench", "--designs=gpt,no_such_design", "--steps=2",
       "--shape=tiny", "--windows=2", "--measure_peak", "--trainer"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  assert [r["design"] for r in lines] == ["gpt", "no_such_design"]
  gpt, missing = lines
  assert missing == {"design": "no_such_design", "error": "unknown seed"}
  for field in ("params", "d_model", "n_blocks", "seq_len", "batch", "tokens_per_s", "step_s", "mfu",
                "xla_flops_per_step", "device", "reference_tokens_per_s", "ratio_to_reference"):
    assert field in gpt, field
  assert (gpt["d_model"], gpt["n_blocks"], gpt["seq_len"], gpt["batch"]) == (32, 1, 32, 2)
  assert gpt["params"] == gpt["reference_params"]
  assert gpt["tokens_per_s"] > 0 and gpt["step_s"] > 0 and gpt["xla_flops_per_step"] > 0
  assert gpt["mfu"] > 0 and gpt["peak_source"] == "measured_bf16_matmul"
  assert gpt["ratio_to_reference"] == pytest.approx(gpt["tokens_per_s"] / gpt["reference_tokens_per_s"])
  # --trainer: the real loop on the KJV corpus, timed in windows between the step's
  assert gpt["trainer_corpus"] == "kjv" and gpt["trainer_tokens_per_s"] > 0
  assert gpt["trainer_ratio"] == pytest.approx(gpt["trainer_tokens_per_s"] / gpt["tokens_per_s"])
