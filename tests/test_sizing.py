import jax
import jax.numpy as jnp
import ml_collections

from gab import checker, registry, seeds, sizing
from gab.model import LM, count_params
from gab.tree import Unit

U = Unit.make
VOCAB = 259


def real_count(tree: Unit, d_model: int, n_blocks: int) -> int:
  model = LM(tree, VOCAB, d_model, n_blocks)
  return count_params(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32)))


def gpt_plus(*extra: Unit) -> Unit:
  return U("Sequence", [*seeds.seed("gpt").children, *extra])


def mlp_residual(expansion: float) -> Unit:
  return U("Residual", [U("Sequence", [U("RMSNorm"), U("GatedMLP", expansion=expansion)])])


def test_counts_match_the_lm():
  for tree in (seeds.seed("gpt"), gpt_plus(mlp_residual(2.0))):
    for d_model, n_blocks in ((64, 1), (96, 3)):
      assert sizing.lm_params(tree, VOCAB, d_model, n_blocks) == real_count(tree, d_model, n_blocks)


def test_gpt_keeps_the_rung_shape():
  target = sizing.lm_params(seeds.seed("gpt"), VOCAB, 128, 4)
  s = sizing.fit(seeds.seed("gpt"), target, 128, 4, VOCAB)
  assert s == {"d_model": 128, "n_blocks": 4, "params": target, "target_params": target, "ratio": 1.0,
               "tolerance": 0.2, "fits": True, "block_params": (target - VOCAB * 128 - 128) // 4}


def test_too_small_adds_blocks():
  conv = U("Residual", [U("Sequence", [U("RMSNorm"), U("CausalConv")])])
  small = U("Sequence", [conv, mlp_residual(2.0)])
  target = sizing.lm_params(seeds.seed("gpt"), VOCAB, 128, 2)
  s = sizing.fit(small, target, 128, 2, VOCAB)
  assert s["fits"] and s["d_model"] == 128 and s["n_blocks"] > 2
  assert abs(s["params"] / target - 1) <= 0.2
  assert s["params"] == real_count(registry.normalize(small), 128, s["n_blocks"])


def test_too_large_narrows_d_model_in_multiples_of_32():
  wide = registry.normalize(seeds.seed("gpt")).replace((1, 0, 1), U("GatedMLP", expansion=4.0))
  target = sizing.lm_params(seeds.seed("gpt"), VOCAB, 128, 2)
  assert sizing.lm_params(wide, VOCAB, 128, 2) > 1.2 * target
  s = sizing.fit(wide, target, 128, 2, VOCAB)
  assert s["fits"] and s["d_model"] < 128 and s["d_model"] % 32 == 0 and s["d_model"] >= 64
  assert 0.8 <= s["ratio"] <= 1.2


def test_at_the_narrowest_width_too_large_removes_a_block():
  big = gpt_plus(mlp_residual(4.0))  # one block is ~2x a GPT block
  target = sizing.lm_params(seeds.seed("gpt"), VOCAB, 64, 4)
  s = sizing.fit(big, target, 64, 4, VOCAB)
  assert s["fits"] and (s["d_model"], s["n_blocks"]) == (64, 2)


def test_no_fit_reports_the_closest_sizing():
  # One block is ~1.5x a GPT block: 2 blocks give 1.42x the target, 1 block 0.78x; widths stay >= 64.
  tree = gpt_plus(mlp_residual(2.0))
  target = sizing.lm_params(seeds.seed("gpt"), VOCAB, 64, 2)
  s = sizing.fit(tree, target, 64, 2, VOCAB)
  assert not s["fits"] and (s["d_model"], s["n_blocks"]) == (64, 1) and s["ratio"] < 0.8
  rung = ml_collections.ConfigDict(dict(d_model=64, n_blocks=2, target_params=target, batch_size=4,
                                        seq_len=64, memory_limit_gb=0.0))
  report = checker.check(tree, rung=rung)
  (failed,) = report.failed()
  assert failed.name == "parameter_budget"
  assert "the closest is d_model=64, n_blocks=1" in failed.message and failed.hint
  assert report.sizing["fits"] is False and report.sizing["n_blocks"] == 1


def test_widths_the_design_cannot_take_are_skipped():
  tree = registry.normalize(seeds.seed("gpt")).replace((0, 0, 1), U("Attention", n_heads=8))
  assert sizing.block_params(tree, 36) is None
  target = sizing.lm_params(seeds.seed("gpt"), VOCAB, 64, 2)
  s = sizing.fit(tree, target, 100, 2, VOCAB)  # 100 splits into 8 heads of odd size 12.5: no
  assert s["fits"] and s["d_model"] % 32 == 0
