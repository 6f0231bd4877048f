"""The post-training audit (gab/audit.py) and what a leaking verification does to the store."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evolution import selection
from evolution.store import Store
from gab import audit, seeds
from gab.model import LM
from gab.tree import Unit, design_to_json
from genesys_jax import leaderboard, record, resolve, state, verify
from train import data as data_lib


U = Unit.make


pytestmark = pytest.mark.usefixtures("leaky_kinds")


def gated_lm():
  tree = seeds.seed("gpt").replace((0, 0, 1), U("MagnitudeGate"))
  model = LM(tree, 259, 64, 1)
  return model, model.init(jax.random.key(0), jnp.zeros((1, 48), jnp.int32))


def tokens(batch=2, length=48):
  rng = np.random.default_rng(0)
  return (rng.integers(3, 259, (batch, length)).astype(np.int32),
          rng.integers(3, 259, (batch, length)).astype(np.int32))


def set_gate(params, value):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  gate = [p for p, _ in flat if jax.tree_util.keystr(p).endswith("['g']")]
  assert len(gate) == 1
  return jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.asarray(value, a.dtype) if p == gate[0] else a, params)


def test_the_audit_finds_a_gate_that_training_opened():
  model, params = gated_lm()
  closed = audit.audit(model.apply, params, *tokens())
  assert not closed["leaks"] and closed["max_change"] == 0.0 and closed["rtol"] == 0.0
  assert audit.voided({"val_bpb": 1.0, "audit": closed}) is None
  opened = audit.audit(model.apply, set_gate(params, 5.0), *tokens())
  assert opened["leaks"] and opened["t"] == 0 and opened["max_change"] > 0
  assert "the logits at positions <= 0 changed when only the tokens after 0 did" in audit.describe(opened)
  metrics = {"val_bpb": 0.01, "params": 10, "tokens": 5, "audit": opened}
  voided = audit.voided(metrics)
  assert voided["val_bpb"] is None and voided["leaking"] and voided["voided"] == metrics
  assert voided["error"].startswith("audit: the trained parameters leak")


def test_a_batch_leak_is_found_and_a_causal_design_passes_at_every_split():
  gpt = LM(seeds.seed("gpt"), 259, 64, 1)
  params = gpt.init(jax.random.key(1), jnp.zeros((1, 48), jnp.int32))
  assert not audit.audit(gpt.apply, params, *tokens(batch=3))["leaks"]
  mean = LM(seeds.seed("gpt").replace((0, 0, 1), U("BatchMeanNow")), 259, 64, 1)
  found = audit.audit(mean.apply, mean.init(jax.random.key(1), jnp.zeros((1, 48), jnp.int32)),
                      *tokens(batch=3))
  assert found["leaks"] and found["t"] == -1  # a row replaced whole changed the others
  assert "other sequences' logits changed" in audit.describe(found)


def test_a_design_that_leaks_after_training_is_voided_marked_and_kept_off_the_boards(tmp_path):
  """A real verification at the smoke config's first rung: the design's gate is closed at
  initialisation and opened by the first optimiser step (the checker would reject it at its
  perturbed parameters, so it is recorded as valid here, as a design that slipped through)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("ladder", "configs/ladder.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = resolve.resolve(module.get_config("smoke"))
  lines = []
  tree = seeds.seed("gpt").replace((0, 0, 1), U("OpensWhenTrained"))
  with Store.open(str(tmp_path)) as store:
    store.add_design(tree.content_hash(), design_to_json(tree), [], "mutation", "slipped", "valid")
    res = verify.verify(config, lambda: data_lib.load_corpus(config.data), store.design(tree.content_hash()),
                        "tiny", str(tmp_path), lines.append)
    lines.append(verify.line(res))
    store.enqueue(tree.content_hash(), "tiny")
    assert store.claim("w", 60.0) == (tree.content_hash(), "tiny")
    assert record.result(store, "w", res, "tiny")
    design = store.design(tree.content_hash())
    (verification,) = store.verifications(tree.content_hash())
  assert design["status"] == "leaking"
  metrics = verification["metrics"]
  assert metrics["val_bpb"] is None and metrics["leaking"] and metrics["voided"]["val_bpb"] > 0
  assert metrics["error"].startswith("audit: the trained parameters leak"), metrics["error"]
  assert any("LEAKS at tiny" in line for line in lines)
  with Store.open(str(tmp_path)) as store:
    assert leaderboard.rows(store, ["tiny"]) == []
    run_state, _ = state.load(config, store)
    assert run_state.pool() == []
    assert selection.promotion_candidates(list(run_state.designs.values()), "tiny", "small", 1.0, 1) == []
    events = [e["payload"] for e in store.events(kind="status_set")]
  assert events[-1]["status"] == "leaking" and json.dumps(events)
